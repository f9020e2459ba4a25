"""What every live rank reports for one optimizer step: loss, gradients, lr, timing, hashes.

The model, per step ``s``:

* loss: ``2 + 6·exp(-s/2000)``, the same curve on every rank, times ``1 + loss_noise``
  (3 %) gaussian noise of the rank's own micro-batch (and the rank's ``loss_bias``);
* gradients: the true norm decays from 1.5 to 1 with 2 % step-to-step noise; each rank's
  ``local_grad_norm`` is it times ``1 + grad_noise`` (3 %) noise (and the rank's
  ``grad_scale``); the all-reduced ``grad_norm`` averages the scales, so it is equal on
  every rank;
* ``lr`` follows the spec's schedule (times the rank's ``lr_factor``);
* ``compute_time_s`` is 0.9 s ± ``compute_noise`` (2 %) (times ``compute_factor``); with
  ``burst_p`` a rank's compute time comes in bursts of a few slow steps (a shared CPU
  host); with chance ``stall_p`` per step one rank's dataloader stalls it 2-3x for one step;
  ``step_time_s`` (equal on every rank) is the slowest rank's compute time plus
  communication;
* ``data_epoch`` (with ``epoch_steps``): the step's epoch; the seed fingerprint changes
  with it (a new shuffle), alike on every rank;
* ``param_checksum`` hashes (seed, step, tp rank, pp rank, lineage): equal on replicas.
"""

from __future__ import annotations

import math
import random
from typing import Final

from trainguard.agents.sim.spec import JobSpec
from trainguard.agents.sim.state import Knobs, digest
from trainguard.schemas.records import StepRecord

__all__ = ["COMPUTE_S", "STALL_PROBABILITY", "StepModel"]

#: Mean compute time of a step on a healthy rank, seconds.
COMPUTE_S: Final = 0.9
#: Chance per step that one rank's dataloader stalls (a benign, one-step slowdown): the
#: default of :attr:`JobSpec.stall_p`.
STALL_PROBABILITY: Final = JobSpec.stall_p
_MICRO_BATCH = 8
_SEQ_LEN = 4096


class StepModel:
    """Per-step values of every rank; each rank and the job draw from their own streams."""

    def __init__(self, spec: JobSpec, seed: int) -> None:
        self._spec = spec
        self._seed = seed
        self._prefix = f"{spec.job_id}:{seed}"
        self._job_rng = random.Random(f"job:{self._prefix}")
        self._rank_rngs = [
            random.Random(f"rank:{self._prefix}:{r}") for r in range(spec.world_size)
        ]
        self._coords = [spec.coords(r) for r in range(spec.world_size)]
        # Bursts draw from their own streams, so a spec without them draws what it always did.
        self._bursts = _Bursts(spec, self._prefix) if spec.burst_p > 0 else None

    def reseed(self, rank: int, salt: str) -> None:
        """Switch ``rank`` to another random stream (its data order and dropout change)."""
        self._rank_rngs[rank] = random.Random(f"rank:{self._prefix}:{rank}:{salt}")

    def records(self, s: int, ts: float, knobs: Knobs, nodes: list[str]) -> list[StepRecord]:
        """Step ``s`` as reported by every live rank, in rank order."""
        spec = self._spec
        live = knobs.live_ranks()
        if not live:
            return []
        jr = self._job_rng
        curve = 2.0 + 6.0 * math.exp(-s / 2000.0)
        true_grad = (1.0 + 0.5 * math.exp(-s / 1000.0)) * (1.0 + 0.02 * jr.gauss(0.0, 1.0))
        comm = 0.05 + abs(jr.gauss(0.0, 0.005))
        # Always drawn, so the job's stream does not depend on whether a stall happens.
        stall_draw, stall_pick, stall_factor = jr.random(), jr.random(), jr.uniform(2.0, 3.0)
        stalled = live[int(stall_pick * len(live))] if stall_draw < spec.stall_p else -1
        lr = spec.lr_at(s)
        burst = self._bursts.factors(live) if self._bursts is not None else None
        ln, gn, cn = spec.loss_noise, spec.grad_noise, spec.compute_noise

        losses, locals_, computes = [], [], []
        for r in live:
            gauss = self._rank_rngs[r].gauss
            n_loss, n_grad, n_time = gauss(0.0, 1.0), gauss(0.0, 1.0), gauss(0.0, 1.0)
            losses.append(curve * (1.0 + ln * n_loss) * (1.0 + knobs.loss_bias[r]))
            locals_.append(true_grad * abs(1.0 + gn * n_grad) * knobs.grad_scale[r])
            compute = COMPUTE_S * (1.0 + cn * n_time) * knobs.compute_factor[r]
            if burst is not None:
                compute *= burst[r]
            computes.append(compute * stall_factor if r == stalled else compute)
        grad_norm = round(true_grad * sum(knobs.grad_scale[r] for r in live) / len(live), 6)
        step_time = round(max(computes) + comm, 4)
        dp = max(1, knobs.world_size // (spec.tp_size * spec.pp_size))
        samples_per_s = round(_MICRO_BATCH * dp / step_time, 2)
        tokens_per_s = round(samples_per_s * _SEQ_LEN, 1)

        epoch = (s - 1) // spec.epoch_steps if spec.epoch_steps else None
        checksums: dict[tuple[int, int, str], str] = {}
        g = spec.gpus_per_node
        out = []
        for k, r in enumerate(live):
            dp_rank, tp_rank, pp_rank = self._coords[r]
            key = (tp_rank, pp_rank, knobs.lineage[r])
            checksum = checksums.get(key)
            if checksum is None:
                checksum = digest(f"params|{self._prefix}|{s}|{tp_rank}|{pp_rank}|{key[2]}")
                checksums[key] = checksum
            out.append(StepRecord(
                job_id=spec.job_id, rank=r, world_size=knobs.world_size, node=nodes[r // g],
                step=s, ts=ts, local_rank=r % g, gpu_index=r % g,
                loss=round(losses[k], 6), grad_norm=grad_norm, lr=lr * knobs.lr_factor[r],
                step_time_s=step_time, samples_per_s=samples_per_s, tokens_per_s=tokens_per_s,
                param_checksum=checksum, env_fingerprint=knobs.env_fingerprint[r],
                dp_rank=dp_rank, tp_rank=tp_rank, pp_rank=pp_rank,
                local_grad_norm=round(locals_[k], 6), compute_time_s=round(computes[k], 4),
                seed_fingerprint=_epoch_seed(knobs.seed_fingerprint[r], epoch),
                data_epoch=epoch,
            ))
        return out


def _epoch_seed(fingerprint: str, epoch: int | None) -> str:
    """The seed fingerprint of a data epoch: the run's own for no epochs (and epoch 0)."""
    return fingerprint if not epoch else digest(f"epoch|{fingerprint}|{epoch}", 16)


class _Bursts:
    """Per rank: bursts of slow steps (a busy shared host), from the rank's own stream."""

    def __init__(self, spec: JobSpec, prefix: str) -> None:
        self._spec = spec
        self._rngs = [random.Random(f"burst:{prefix}:{r}") for r in range(spec.world_size)]
        self._left = [0] * spec.world_size
        self._factor = [1.0] * spec.world_size

    def factors(self, live: list[int]) -> dict[int, float]:
        """Compute-time factor of every live rank at this step (1.0 outside a burst)."""
        spec = self._spec
        out = {}
        for r in live:
            rng = self._rngs[r]
            start, length, factor = rng.random(), rng.randint(1, spec.burst_steps), \
                rng.uniform(1.1, spec.burst_max)
            if self._left[r] == 0 and start < spec.burst_p:
                self._left[r], self._factor[r] = length, factor
            if self._left[r] > 0:
                self._left[r] -= 1
                out[r] = self._factor[r]
            else:
                out[r] = 1.0
        return out
