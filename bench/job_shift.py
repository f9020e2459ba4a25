"""``job_shift``: false alarms on clean runs, and what one closed step costs.

Three measurements, no broker:

* ``arl``: the change-point test alone on Gaussian noise around a falling loss curve, for
  a few thresholds ``h`` (the default and lower ones, whose alarm rates show how fast the
  false-alarm rate falls with ``h``); alarms per million steps.
* ``clean``: simulated jobs (16 ranks) running every benign scenario (lr warmup and decay,
  eval phases, checkpoint pauses, a clean restart, a resize, a throttled GPU, heavy
  step-time noise, the clean mix, plain runs) through the consistency stage in-process;
  every ``job_shift`` finding is counted, and every other integrity/availability one.
* ``cost``: microseconds per closed step of :class:`TrajectoryWatch` (16 and 1,024 ranks).

    python -m bench.job_shift arl --steps 1000000
    python -m bench.job_shift clean --hours 4
    python -m bench.job_shift cost
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from dataclasses import replace

from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.pipeline.consistency.assembler import StepAssembler
from trainguard.pipeline.consistency.changepoint import ShiftDetector, ShiftParams
from trainguard.pipeline.consistency.columns import step_columns
from trainguard.pipeline.consistency.trajectory import TrajectoryWatch
from trainguard.schemas.records import StepBatch

BENIGN = ("lr_schedule", "eval_phase", "checkpoint_pause", "clean_restart", "job_resize",
          "thermal_throttle", "noisy_steps", "clean_mix", None)


def arl(steps: int, seed: int) -> None:
    """Alarms per million steps of one two-sided test, by threshold."""
    c = ConsistencyConfig()
    base = ShiftParams(window=c.job_shift_window, lag=c.job_shift_lag,
                       min_ref=c.job_shift_min_ref, k=c.job_shift_k, h=c.job_shift_h,
                       clip=c.job_shift_clip, sigma_floor=c.job_shift_sigma_floor,
                       min_effect=c.job_shift_loss_effect, curve_t=c.job_shift_curve_t)
    for h in (4.0, 6.0, 8.0, c.job_shift_h):
        det = ShiftDetector(replace(base, h=h))
        rng = random.Random(seed)
        alarms = 0
        for s in range(steps):
            y = math.log(2.0 + 6.0 * math.exp(-(s % 20000) / 2000.0)) + 0.01 * rng.gauss(0, 1)
            if s % 20000 == 0:
                det.reset()  # the curve starts over: a new run
            if det.update(float(s), y) is not None:
                alarms += 1
                det.reset()
        print(f"h={h:g}: {alarms} alarms in {steps} steps "
              f"({alarms / steps * 1e6:.1f} per million)")


def clean(hours: float, seed: int) -> None:
    """job_shift findings over ``hours`` simulated clean job-hours, benign scenarios mixed."""
    spec = JobSpec(nodes=4, gpus_per_node=4)
    ticks = 3600
    runs = max(1, round(hours))
    found: dict[str, int] = {}
    other: dict[str, int] = {}
    started = time.perf_counter()
    for i, name in zip(range(runs), itertools.cycle(BENIGN), strict=False):
        scenario = None if name is None else make_scenario(
            name, spec, seed + i, **({"total_steps": 3000} if name == "lr_schedule" else {}))
        sim = JobSimulator(spec, scenario, seed=seed + i)
        now = [sim.start_ts]
        stage = ConsistencyStage(clock=lambda now=now: now[0])
        out = []
        for t in range(ticks):
            records = [e.record for e in sim.tick()]
            now[0] = sim.start_ts + t
            out += stage.observe(records)
        out += stage.flush(now[0] + 5)
        ids = {(f.check, f.finding_id, f.category) for f in out}
        label = name or "plain"
        found[label] = found.get(label, 0) + sum(1 for c, _, _ in ids if c == "job_shift")
        for check, _, category in ids:
            if check != "job_shift" and category in ("integrity", "availability"):
                other[check] = other.get(check, 0) + 1
    print(f"{runs} job-hours ({runs * ticks} steps per metric) in "
          f"{time.perf_counter() - started:.0f} s; job_shift findings by scenario: {found}; "
          f"other integrity/availability findings: {other}")


def cost(seed: int) -> None:
    """Microseconds per closed step of the trajectory tests alone."""
    for nodes, gpus in ((4, 4), (128, 8)):
        spec = JobSpec(nodes=nodes, gpus_per_node=gpus)
        sim = JobSimulator(spec, seed=seed)
        config = ConsistencyConfig()
        asm = StepAssembler(config)
        closed = []
        for t in range(400 if nodes < 100 else 250):
            for e in sim.tick():
                if isinstance(e.record, StepBatch):
                    asm.add_many(e.record.steps)
            closed += asm.close_due(sim.start_ts + t)
        pairs = [(cs, step_columns(cs.records)) for cs in closed]
        watch = TrajectoryWatch(config)
        start = time.perf_counter()
        for cs, cols in pairs:
            watch.evaluate(cs, cols)
        each = (time.perf_counter() - start) / len(pairs) * 1e6
        print(f"{spec.world_size} ranks: {each:.1f} us per closed step ({len(pairs)} steps)")


def main() -> None:
    """Command line: ``arl``, ``clean`` or ``cost``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("arl", "clean", "cost"))
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "arl":
        arl(args.steps, args.seed)
    elif args.what == "clean":
        clean(args.hours, args.seed)
    else:
        cost(args.seed)


if __name__ == "__main__":
    main()
