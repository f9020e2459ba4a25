"""Per-record quarantine: a stage that raises costs the records that make it raise, not the worker.

The analytics stages (baselines, consistency, the alert lifecycle) run over whole batches
for speed. When one raises, the glue isolates the record(s) that trigger the failure,
turns each into a :class:`~trainguard.pipeline.dead_letters.DeadLetter` with reason
``stage_error`` (its message names the stage and the exception; its bytes are the source
message's), and goes on with the others. :class:`Quarantine` counts those failures per
stage (exported in ``pipeline_health`` and the progress line) and logs them rate-limited:
the first of each stage with its traceback, then at most one line per ``log_every_s``
saying how many were not logged. :func:`isolate` is the bisection that finds the culprits.

Only :class:`Exception` is caught: cancellation and interpreter exits still propagate.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from trainguard.pipeline.dead_letters import DeadLetter, RawMessage

__all__ = ["LOG_EVERY_S", "STAGE_ERROR", "Quarantine", "describe", "isolate"]

log = logging.getLogger(__name__)

#: The dead-letter reason of a record a stage raised on.
STAGE_ERROR = "stage_error"
#: At most one log line per stage this often (seconds); the counters are the record.
LOG_EVERY_S = 10.0

R = TypeVar("R")


class Quarantine:
    """Counts, logs (rate-limited) and dead-letters the failures of the worker's stages."""

    def __init__(self, *, log_every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._every, self._clock = log_every_s, clock
        #: Failures since start, per stage: dead-lettered records and failures on no record.
        self.errors: dict[str, int] = defaultdict(int)
        #: Jobs whose consistency state was dropped because a check raised on it.
        self.jobs_reset = 0
        self._next_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)

    def failed(self, stage: str, exc: Exception, **context: object) -> None:
        """Count and log (rate-limited) one failure of ``stage`` on no particular record."""
        self.errors[stage] += 1
        self._log(stage, exc, "".join(f" {k}={v}" for k, v in context.items()))

    def dead_letter(self, stage: str, exc: Exception, source: RawMessage,
                    **context: object) -> DeadLetter:
        """Count and log one record ``stage`` raised on; return its dead letter."""
        self.failed(stage, exc, topic=source.topic, partition=source.partition,
                    offset=source.offset, **context)
        return DeadLetter(source, STAGE_ERROR, describe(stage, exc))

    def job_reset(self, stage: str, job_ids: Sequence[str], exc: Exception, *,
                  quiet: bool = False) -> None:
        """Count jobs whose state ``stage`` dropped after ``exc``; log it unless ``quiet``."""
        self.jobs_reset += len(job_ids)
        if not quiet:
            self._log(f"{stage}_reset", exc, f" jobs={','.join(job_ids)} state=dropped")

    def total(self) -> int:
        """Every stage failure since start."""
        return sum(self.errors.values())

    def health(self) -> dict[str, float]:
        """Counters for ``pipeline_health``: ``stage_errors_<stage>`` and jobs reset."""
        out = {f"stage_errors_{stage}": float(n) for stage, n in self.errors.items()}
        out["stage_jobs_reset"] = float(self.jobs_reset)
        return out

    def _log(self, key: str, exc: Exception, context: str) -> None:
        now = self._clock()
        first = key not in self._next_log
        if not first and now < self._next_log[key]:
            self._suppressed[key] += 1
            return
        self._next_log[key] = now + self._every
        skipped, self._suppressed[key] = self._suppressed[key], 0
        # The first failure of a stage gets its traceback: it is a bug to fix.
        log.warning("stage failed, record quarantined stage=%s error=%s%s not_logged=%d",
                    key, describe(key, exc), context, skipped, exc_info=exc if first else None)


def describe(stage: str, exc: Exception) -> str:
    """The dead-letter message: ``stage consistency raised ValueError: ...``."""
    return f"stage {stage} raised {type(exc).__name__}: {exc}"


def isolate(run: Callable[[Sequence[int]], list[R]], indices: Sequence[int],
            on_error: Callable[[int, Exception], None]) -> list[R]:
    """``run(indices)``, or when it raises, the output of the parts that do not.

    Bisects: a failing part is split in halves until single indices, each reported to
    ``on_error(index, exc)``. Costs one call when nothing fails and about ``2 k log n``
    for ``k`` bad records among ``n``. ``run`` must tolerate seeing a record again (the
    stages skip points they already hold), since a failed call may have applied some.
    """
    try:
        return run(indices)
    except Exception as exc:
        if len(indices) == 1:
            on_error(indices[0], exc)
            return []
        mid = len(indices) // 2
        return (isolate(run, indices[:mid], on_error)
                + isolate(run, indices[mid:], on_error))
