"""Which steps get a parameter digest: every N steps, or N chosen from measured cost.

``checksum_every=N`` (an int) digests the steps whose index is a multiple of N (0: none).
``checksum_every="auto"`` (the default) keeps the digest under a share of the step time:

1. **Calibration**: the first ``CALIBRATION_STEPS`` steps after attach are all digested,
   each digest timed (on a GPU with a device sync around it, on these steps only) along
   with the step time (from the end of one :meth:`TrainGuard.step` to the next call).
2. **Choice** (:func:`choose_every`): N = the smallest **power of two** with
   ``median digest / N <= budget * median step`` (``checksum_budget``, 0.5 % by default),
   at most ``checksum_max_every`` (64, a power of two). From then on the steps whose index
   is a multiple of N are digested.

3. **Agreement** (a distributed job): the ranks take the largest N any of them chose
   (:func:`agree_max`: ONE all-reduce of one integer on the job's default process group,
   when calibration ends inside :meth:`TrainGuard.step`, which every rank calls at the same
   point of its loop: after ``optimizer.step()``, when the step's own collectives are done;
   no group of the kit's own, whose full mesh of connections would cost a 10,000-rank job
   dearly). Every rank then digests the same steps,
   so every replica votes at each of them (a step only some replicas digest would let a
   minority outvote or tie the honest ones).

Without the agreement, replicas that chose different N would still share every multiple of
the largest N (all choices are powers of two not above the cap) but vote in subsets
between them. A parameter change made at step ``t`` is compared at the first multiple of
N at or after ``t``: a detection delay of at most N steps (≤ 64 with the defaults), plus
the one or two steps a GPU's asynchronous readback adds.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from trainguard.agents.trainer.checksum import ParamChecksum

__all__ = ["AUTO", "CALIBRATION_STEPS", "DEFAULT_BUDGET",
           "DEFAULT_MAX_EVERY", "Cadence", "agree_max", "choose_every"]

AUTO: Final = "auto"
#: Share of the step time the digest may cost on average.
DEFAULT_BUDGET: Final = 0.005
#: The largest interval "auto" chooses (a power of two).
DEFAULT_MAX_EVERY: Final = 64
#: Steps digested (and timed) after attach before "auto" chooses its interval.
CALIBRATION_STEPS: Final = 8

Every = int | Literal["auto"]

_log = logging.getLogger(__name__)


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def choose_every(digest_s: float, step_s: float, *, budget: float = DEFAULT_BUDGET,
                 max_every: int = DEFAULT_MAX_EVERY) -> int:
    """The smallest power of two N with ``digest_s / N <= budget * step_s`` (≤ ``max_every``).

    A step time that is not a positive finite number gives ``max_every``.
    """
    if not budget > 0:
        raise ValueError(f"checksum_budget {budget}: expected > 0")
    if not _is_power_of_two(max_every):
        raise ValueError(f"checksum_max_every {max_every}: expected a power of two >= 1")
    if not (math.isfinite(step_s) and step_s > 0 and math.isfinite(digest_s)):
        return max_every
    every = 1
    while every < max_every and digest_s > every * budget * step_s:
        every *= 2
    return every


class Cadence:
    """Decides per step index whether to digest; in "auto" mode, calibrates then chooses."""

    def __init__(self, every: Every = AUTO, *, budget: float = DEFAULT_BUDGET,
                 max_every: int = DEFAULT_MAX_EVERY,
                 calibration_steps: int = CALIBRATION_STEPS,
                 clock: Callable[[], float] = time.monotonic, context: str = "",
                 agree: Callable[[int], int] | None = None) -> None:
        if every != AUTO and (isinstance(every, bool) or not isinstance(every, int)
                              or every < 0):
            raise ValueError(f"checksum_every {every!r}: expected an int >= 0 (0 = off) "
                             f"or {AUTO!r}")
        choose_every(0.0, 1.0, budget=budget, max_every=max_every)  # validates both
        if calibration_steps < 1:
            raise ValueError(f"calibration_steps {calibration_steps}: expected >= 1")
        self.auto = every == AUTO
        self.budget, self.max_every = budget, max_every
        self._left = calibration_steps if self.auto else 0
        #: The interval in effect (1 while "auto" calibrates; 0 = off).
        self.every: int = 1 if self.auto else int(every)
        self._digest_s: list[float] = []
        self._step_s: list[float] = []
        self._clock, self._context, self._agree = clock, context, agree

    @property
    def calibrating(self) -> bool:
        """Whether "auto" is still timing digests (every step is digested meanwhile)."""
        return self._left > 0

    def due(self, index: int) -> bool:
        """Whether step ``index`` gets a digest (no side effects)."""
        if self.calibrating:
            return True
        return self.every > 0 and index % self.every == 0

    def observe(self, digest_s: float, step_s: float) -> int | None:
        """Record one calibration step's costs; returns N when this completes calibration."""
        if not self.calibrating:
            return None
        self._digest_s.append(digest_s)
        self._step_s.append(step_s)
        self._left -= 1
        if self._left:
            return None
        every = choose_every(statistics.median(self._digest_s),
                             statistics.median(self._step_s),
                             budget=self.budget, max_every=self.max_every)
        if self._agree is not None:
            every = self._agree(every)
        self.every = every
        return every

    @property
    def measured(self) -> tuple[float, float] | None:
        """Median ``(digest s, step s)`` of the calibration, once it is done."""
        if self.calibrating or not self._digest_s:
            return None
        return statistics.median(self._digest_s), statistics.median(self._step_s)

    def digest(self, checksum: ParamChecksum, step_s: float) -> Any:
        """``checksum.digest()``; while calibrating, timed (with a device sync) and observed."""
        if not self.calibrating:
            return checksum.digest()
        sync = _device_sync(checksum)
        sync()
        start = self._clock()
        digest = checksum.digest()
        sync()
        if self.observe(self._clock() - start, step_s) is not None:
            digest_s, median_step_s = self.measured or (0.0, 0.0)
            _log.info("trainguard checksum cadence %s every=%d digest_ms=%.3f step_ms=%.3f "
                      "budget=%g", self._context, self.every, 1e3 * digest_s,
                      1e3 * median_step_s, self.budget)
        return digest


def _device_sync(checksum: ParamChecksum) -> Callable[[], None]:
    """Waits for the parameters' device (no-op on the CPU, where the digest is synchronous)."""
    device = checksum.params[0].device if checksum.params else None
    if device is None or device.type == "cpu":
        return _no_sync
    import torch

    sync = getattr(getattr(torch, device.type, None), "synchronize", None)
    return (lambda: sync(device)) if callable(sync) else _no_sync


def _no_sync() -> None:
    return None


def agree_max(max_every: int) -> Callable[[int], int] | None:
    """In a distributed job, a function taking a rank's N to the largest N of all ranks.

    The all-reduce runs on the default process group, on its backend's device (a CUDA
    tensor for NCCL). ``None`` outside a distributed job. A failing all-reduce (a peer
    gone) leaves the rank on the cap ``max_every``, which every choice divides.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None

    def agree(every: int) -> int:
        import torch

        device = "cpu"
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            device = f"cuda:{torch.cuda.current_device()}"
        value = torch.tensor([every], dtype=torch.int64, device=device)
        try:
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        except Exception as exc:  # a peer that never calibrates: fall back to the cap
            _log.warning("trainguard checksum cadence: peers did not answer (%r); every=%d",
                         exc, max_every)
            return max_every
        return int(value.item())

    return agree
