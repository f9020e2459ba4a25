"""Quiet baselines (issue #16): anomalies per GPU-day on clean, realistically noisy telemetry.

Simulates many GPUs (``--gpus``, 16 per job) for ``--hours`` of 1 Hz telemetry, as the
worker's baselines stage sees it: per GPU ``util_gpu_pct`` and ``power_w``, per rank
(one per GPU) ``loss``, ``grad_norm``, ``step_time_s``, ``tokens_per_s`` and
``samples_per_s``, fed tick by tick to one :class:`DetectorBank` per metric with the
stage's directions and each entity's job as its peer group. The noise is what real
telemetry has and a clean simulator does not:

* heavy tails (Student t, 3 degrees of freedom) on every series, and dataloader stalls
  (a rank's step 2-5x slower, one step in 500);
* bursts: a GPU's (and its rank's) noise four times larger for 30-180 s, about every two
  hours (volatility, not a level: the noise stays centred);
* checkpoints every ``--checkpoint-min`` minutes per job: every GPU of the job idles for
  20-60 s (util near 0, power near idle, within 2 s of each other), no steps meanwhile,
  and the first step after the pause is as long as the pause;
* regime changes: about four times a day a job's power level moves by up to 15 % and its
  step time by up to 10 %, for good; each GPU's power also wanders slowly (about 1 %);
* loss falls, as it does while training works; the grad norm is the all-reduced one, the
  same on every rank of a job (heavy-tailed from step to step).

Into a few jobs per seed it injects faults on one GPU (or rank) each, at a random time
after the first two hours: ``collapse`` (util to ~2 %, power to idle), ``shift`` (power
-20 %), ``drift`` (power -20 % over an hour) and ``rank_slow`` (that rank's step time
+20 %, its throughput -17 %). It prints the anomaly rate of the untouched GPUs per GPU-day
(a GPU and its rank, all seven metrics) and, per fault, the detection rate and delay
(the first anomaly of the faulty GPU or rank after the fault began: within 10 minutes, or
two hours for the drift). ``--config`` picks the bank: ``new`` (today's defaults) or
``old`` (the defaults before issue #16: z_spike 6, confirm 3, no effect floor, spike
quiet time, episodes or peers; same code otherwise).

    python -m bench.baselines_quiet --gpus 256 --hours 6 --seeds 3 --config old new
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from trainguard.pipeline.baselines import GPU_METRICS, RANK_METRICS, BaselineConfig
from trainguard.pipeline.detect import BankConfig, Detection, DetectorBank

__all__ = ["CONFIGS", "FAULTS", "Result", "run"]

JOB_SIZE = 16
FAULTS = ("collapse", "shift", "drift", "rank_slow")
#: How long after a fault began its first anomaly still counts as finding it.
_DEADLINE_S = {"collapse": 600.0, "shift": 600.0, "drift": 7200.0, "rank_slow": 600.0}
#: The bank's defaults before issue #16 (the rest of its code is today's).
OLD = BankConfig(z_spike=6.0, confirm=3, min_effect=0.0,
                 spike_quiet_s=0.0, episode_s=0.0, peer_share=0.0,
                 cp_threshold=10.0, burst_ratio=1e9)
CONFIGS = {"old": OLD, "new": BaselineConfig().bank}


@dataclass
class Result:
    """One run: clean anomalies, and each injected fault's delay (None: missed)."""

    gpu_days: float = 0.0
    clean: Counter[tuple[str, str]] = field(default_factory=Counter)
    delays: dict[str, list[float | None]] = field(default_factory=dict)
    suppressed: Counter[str] = field(default_factory=Counter)


class _Telemetry:
    """The simulated cluster: state of the noise, checkpoints, regimes and faults."""

    def __init__(self, gpus: int, hours: float, seed: int, checkpoint_s: float) -> None:
        self.rng = rng = np.random.default_rng(seed)
        self.n, self.end = gpus, hours * 3600.0
        self.job = np.arange(gpus) // JOB_SIZE
        jobs = int(self.job.max()) + 1
        self.power_base = rng.uniform(280, 420, gpus)
        self.step_base = rng.uniform(0.8, 1.2, jobs)[self.job]
        self.tokens = 4096.0 * 8
        self.wander = np.zeros(gpus)
        self.job_power = np.ones(jobs)
        self.job_step = np.ones(jobs)
        self.ckpt_every, self.ckpt_phase = checkpoint_s, rng.uniform(0, checkpoint_s, jobs)
        self.ckpt_len = rng.uniform(20, 60, jobs)
        self.jitter = rng.uniform(0, 2, gpus)
        self.burst_until = np.full(gpus, -1.0)
        self.was_paused = np.zeros(gpus, dtype=bool)
        self.pause_start = np.zeros(gpus)
        self.faults = self._plan_faults(jobs)

    def _plan_faults(self, jobs: int) -> dict[int, tuple[str, float]]:
        """One faulty GPU in each of the first jobs, a kind each, at a random time."""
        out: dict[int, tuple[str, float]] = {}
        if self.end < 3 * 3600:
            return out
        picked = self.rng.permutation(jobs)[: min(jobs // 2, 2 * len(FAULTS))]
        for i, job in enumerate(picked):
            gpu = int(job) * JOB_SIZE + int(self.rng.integers(JOB_SIZE))
            start = float(self.rng.uniform(2 * 3600, self.end - 1.5 * 3600))
            out[gpu] = (FAULTS[i % len(FAULTS)], start)
        return out

    def tick(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(GPU values: n x 2, rank values: n x 5) at second ``t``; NaN: no step."""
        rng, n = self.rng, self.n
        # Regime changes of a job (a new phase, a new batch size): for good.
        moved = rng.random(len(self.job_power)) < 4 / 86400
        self.job_power[moved] *= rng.uniform(0.85, 1.15, moved.sum())
        self.job_step[moved] *= rng.uniform(0.9, 1.1, moved.sum())
        self.wander = 0.999 * self.wander + 0.00045 * rng.standard_normal(n)
        new_burst = (rng.random(n) < 1 / 7200) & (self.burst_until < t)
        self.burst_until[new_burst] = t + rng.uniform(30, 180, new_burst.sum())
        loud = np.where(self.burst_until >= t, 4.0, 1.0)
        heavy = rng.standard_t(3, (7, n)) * loud
        phase = (t - self.ckpt_phase[self.job] - self.jitter) % self.ckpt_every
        paused = phase < self.ckpt_len[self.job]

        power = self.power_base * self.job_power[self.job] * (1 + self.wander)
        power = power * (1 + 0.015 * heavy[0])
        util = np.minimum(100.0, 97.0 + 1.2 * heavy[1])
        util = np.where(paused, rng.uniform(0, 8, n), util)
        power = np.where(paused, self.power_base * rng.uniform(0.2, 0.3, n), power)

        step = self.step_base * self.job_step[self.job] * np.maximum(0.5, 1 + 0.03 * heavy[2])
        step = np.where(rng.random(n) < 0.002, step * rng.uniform(2, 5, n), step)
        resumed = self.was_paused & ~paused
        self.pause_start = np.where(paused & ~self.was_paused, t, self.pause_start)
        step = np.where(resumed, step + t - self.pause_start, step)
        self.was_paused = paused
        loss = (1.5 + np.exp(-t / 20000.0)) * (1 + 0.01 * heavy[3])
        # The all-reduced norm: one value per job (and step), the same on all its ranks.
        grad = np.exp(0.15 * rng.standard_t(3, len(self.job_power)))[self.job]
        gpu = np.stack([util, power], axis=1)
        rank = np.stack([loss, grad, step, self.tokens / step, 8 / step], axis=1)
        self._inject(t, gpu, rank)
        rank[paused] = np.nan
        return gpu, rank

    def _inject(self, t: float, gpu: np.ndarray, rank: np.ndarray) -> None:
        for g, (kind, start) in self.faults.items():
            if t < start:
                continue
            if kind == "collapse":
                gpu[g] = (self.rng.uniform(0, 4), 0.22 * self.power_base[g])
            elif kind == "shift":
                gpu[g, 1] *= 0.8
            elif kind == "drift":
                gpu[g, 1] *= 1 - 0.2 * min(1.0, (t - start) / 3600.0)
            else:
                rank[g, 2] *= 1.2
                rank[g, 3:] /= 1.2


def run(config: BankConfig, gpus: int, hours: float, seed: int,
        checkpoint_s: float = 1800.0) -> Result:
    """One simulated run through one bank per metric; see the module docstring."""
    sim = _Telemetry(gpus, hours, seed, checkpoint_s)
    gpu_banks = [DetectorBank(m, replace(config, direction=d), capacity=gpus)  # type: ignore[arg-type]
                 for m, d in GPU_METRICS.items()]
    rank_banks = [DetectorBank(m, replace(config, direction=d), capacity=gpus)  # type: ignore[arg-type]
                  for m, d in RANK_METRICS.items()]
    rows = np.arange(gpus, dtype=np.int64)
    found: list[Detection] = []
    for k in range(int(sim.end)):
        t = float(k)
        gpu, rank = sim.tick(t)
        ts = np.full(gpus, t)
        for j, bank in enumerate(gpu_banks):
            found += bank.update(rows, gpu[:, j], ts, sim.job)
        for j, bank in enumerate(rank_banks):
            found += bank.update(rows, rank[:, j], ts, sim.job)
    out = Result(gpu_days=(gpus - len(sim.faults)) * hours / 24.0)
    for bank in gpu_banks + rank_banks:
        out.suppressed.update(bank.suppressed)
    for d in found:
        if d.row not in sim.faults:
            out.clean[(d.metric, d.kind)] += 1
    for g, (kind, start) in sim.faults.items():
        rank_fault = kind == "rank_slow"
        hits = [d.ts - start for d in found if d.row == g and d.ts >= start
                and (d.metric in RANK_METRICS) == rank_fault]
        delay = min(hits) if hits and min(hits) <= _DEADLINE_S[kind] else None
        out.delays.setdefault(kind, []).append(delay)
    return out


def _report(name: str, results: list[Result], took: float) -> None:
    days = sum(r.gpu_days for r in results)
    clean: Counter[tuple[str, str]] = sum((r.clean for r in results), Counter())
    total = sum(clean.values())
    print(f"[{name}] {days:.1f} clean GPU-days: {total} anomalies, "
          f"{total / days:.2f} per GPU-day ({took:.0f} s)")
    for (metric, kind), n in clean.most_common(8):
        print(f"    {metric:>14} {kind:<11} {n}")
    suppressed: Counter[str] = sum((r.suppressed for r in results), Counter())
    print("    suppressed: " + ", ".join(f"{k}={v}" for k, v in sorted(suppressed.items())))
    for kind in FAULTS:
        delays = [d for r in results for d in r.delays.get(kind, [])]
        if not delays:
            continue
        hit = [d for d in delays if d is not None]
        med = f"{statistics.median(hit):.0f} s" if hit else "-"
        worst = f"{max(hit):.0f} s" if hit else "-"
        print(f"    {kind:>10}: found {len(hit)}/{len(delays)}, delay median {med}, "
              f"worst {worst}")


def main() -> None:
    """Run every config over the same seeds and print the figures side by side."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=256)
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--checkpoint-min", type=float, default=30.0)
    p.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["old", "new"])
    args = p.parse_args()
    for name in args.config:
        start = time.perf_counter()
        results = [run(CONFIGS[name], args.gpus, args.hours, seed, args.checkpoint_min * 60)
                   for seed in range(args.seeds)]
        _report(name, results, time.perf_counter() - start)


if __name__ == "__main__":
    main()
