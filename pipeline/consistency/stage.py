"""The consistency stage: decoded records in, :class:`~trainguard.schemas.records.Finding` s out.

Plain Python and numpy, no Faust: the worker feeds :meth:`ConsistencyStage.observe` with
each batch of decoded records and calls :meth:`ConsistencyStage.flush` periodically so
that the steps of a job whose records stopped still close. Everything runs in event time:
each job's watermark is the largest event time seen for it (steps, checkpoint events and
its GPU sample batches), so a replay gives the same findings, with the same ids.

Memory is bounded: per job, only open steps, a few numbers per rank and per node, each
rank's last ``max_checkpoints`` saves and the open findings; at most ``max_jobs`` jobs (past it
the least recently seen is evicted and counted, ``evicted_jobs``), and a job silent for
``job_idle_s`` of event time is forgotten.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.job import JobState
from trainguard.schemas.records import (
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Record,
    StepBatch,
    StepRecord,
)

__all__ = ["ConsistencyStage"]

log = logging.getLogger(__name__)

_COUNTERS = ("late_records", "malformed_records", "forced_closes", "restarts",
             "steps_closed", "loads_checked", "unknown_loads", "conflicting_records",
             "conflicting_saves", "refused_saves")


class ConsistencyStage:
    """Cross-rank and cross-node consistency checks over every job in the input."""

    def __init__(self, config: ConsistencyConfig | None = None) -> None:
        self.config = config or ConsistencyConfig()
        #: Every tracked job, least recently seen first (a dict keeps insertion order).
        self.jobs: dict[str, JobState] = {}
        #: The largest event time seen in any job's records.
        self.watermark = -math.inf
        self.expired_jobs = 0
        self.evicted_jobs = 0
        self._retired = dict.fromkeys(_COUNTERS, 0)
        self._next_expiry = -math.inf

    def observe(self, records: Sequence[Record]) -> list[Finding]:
        """Take a batch of records; return the findings they completed.

        Step batches and records, checkpoint events and sample batches that name their
        job are used; anything else is ignored.
        """
        out: list[Finding] = []
        touched: dict[str, JobState] = {}
        for rec in records:
            if isinstance(rec, StepBatch):
                job = touched.get(rec.job_id) or self._touch(rec.job_id, rec.cluster, touched)
                job_id = rec.job_id
                if all(step.job_id == job_id for step in rec.steps):
                    job.asm.add_many(rec.steps, rec.node)
                else:  # an agent mixing jobs in one batch: route each record
                    for step in rec.steps:
                        self._touch(step.job_id, rec.cluster, touched).asm.add(step, rec.node)
            elif isinstance(rec, StepRecord):
                self._touch(rec.job_id, None, touched).asm.add(rec)
            elif isinstance(rec, CheckpointEvent):
                job = self._touch(rec.job_id, rec.cluster, touched)
                if rec.action == "load":
                    job.asm.loaded(rec.rank, rec.ts)
                else:
                    job.asm.advance(rec.ts)
                job.pending_events.append(rec)
            elif isinstance(rec, GpuSampleBatch) and rec.job_id is not None:
                out += self._touch(rec.job_id, rec.cluster, touched).add_samples(rec)
        for job in touched.values():
            out += job.finish(job.asm.watermark)
            if job.asm.watermark > self.watermark:
                self.watermark = job.asm.watermark
        self._expire()
        return out

    def flush(self, now: float | None = None,
              on_error: Callable[[str, Exception], None] | None = None) -> list[Finding]:
        """Close every open step whose wait expired at event time ``now``.

        ``now`` defaults to the stage's watermark (the largest event time of any job). Pass
        an *event* time: a wall clock ahead of replayed data would close steps before
        their ranks' records arrive. With ``on_error``, a job whose checks raise is
        forgotten and reported to ``on_error(job_id, exc)``; the other jobs still close.
        """
        at = self.watermark if now is None else now
        out: list[Finding] = []
        for job in list(self.jobs.values()):
            if job.asm.open_steps:
                try:
                    out += job.close(max(at, job.asm.watermark))
                except Exception as exc:
                    if on_error is None:
                        raise
                    self.forget(job.job_id)
                    on_error(job.job_id, exc)
        self._expire()
        return out

    def forget(self, job_id: str) -> bool:
        """Drop one job's state (its counters are kept); False if it was not known.

        What the worker does when a check raised on the job: state left half-updated by
        the failure would make its next records fail again.
        """
        job = self.jobs.get(job_id)
        if job is None:
            return False
        self._retire(job)
        return True

    def open_findings(self, job_id: str | None = None) -> list[Finding]:
        """Findings whose culprits are still blamed (of one job, or of every job)."""
        if job_id is None:
            jobs = list(self.jobs.values())
        else:
            jobs = [self.jobs[job_id]] if job_id in self.jobs else []
        return [f for job in jobs for f in job.tracker.open_findings()]

    def stats(self) -> dict[str, int]:
        """Counters since start (forgotten jobs included) and current sizes."""
        totals = dict(self._retired)
        for job in self.jobs.values():
            for name, value in _job_counters(job).items():
                totals[name] += value
        totals["jobs"] = len(self.jobs)
        totals["open_steps"] = sum(job.asm.open_steps for job in self.jobs.values())
        totals["expired_jobs"] = self.expired_jobs
        totals["evicted_jobs"] = self.evicted_jobs
        return totals

    def _touch(self, job_id: str, cluster: str | None, touched: dict[str, JobState]) -> JobState:
        job = touched.get(job_id)
        if job is None:
            job = self.jobs.pop(job_id, None)  # re-inserted last: the most recently seen
            if job is None:
                if len(self.jobs) >= self.config.max_jobs:
                    self._evict(touched)
                job = JobState(job_id, cluster, self.config)
            self.jobs[job_id] = job
            touched[job_id] = job
        if cluster is not None:
            job.name_cluster(cluster)
        return job

    def _evict(self, touched: dict[str, JobState]) -> None:
        """Forget the least recently seen job to make room for a new one.

        The first job in :attr:`jobs` not fed by the current batch (they sit last), else
        the first: O(1), so a flood of forged job ids costs each one the same.
        """
        oldest = next((j for j in self.jobs.values() if j.job_id not in touched),
                      next(iter(self.jobs.values())))
        self._retire(oldest)
        touched.pop(oldest.job_id, None)
        self.evicted_jobs += 1
        if _worth_logging(self.evicted_jobs):
            log.warning("consistency job evicted job=%s max_jobs=%d evicted_jobs=%d",
                        oldest.job_id, self.config.max_jobs, self.evicted_jobs)

    def _expire(self) -> None:
        # A scan of every job: cheap once a minute of event time, too dear per batch.
        if self.watermark < self._next_expiry:
            return
        self._next_expiry = self.watermark + min(60.0, self.config.job_idle_s / 4)
        horizon = self.watermark - self.config.job_idle_s
        for job in [j for j in self.jobs.values() if j.asm.watermark < horizon]:
            self._retire(job)
            self.expired_jobs += 1

    def _retire(self, job: JobState) -> None:
        for name, value in _job_counters(job).items():
            self._retired[name] += value
        del self.jobs[job.job_id]


def _job_counters(job: JobState) -> dict[str, int]:
    asm = job.asm
    return {"late_records": asm.late, "malformed_records": asm.malformed,
            "forced_closes": asm.forced, "restarts": asm.restarts,
            "steps_closed": job.steps_closed, "loads_checked": job.checkpoints.loads_checked,
            "unknown_loads": job.checkpoints.unknown_loads,
            "conflicting_records": asm.conflicting,
            "conflicting_saves": job.checkpoints.conflicting_saves,
            "refused_saves": job.checkpoints.refused_saves}



def _worth_logging(count: int) -> bool:
    """Log the first few of a counted event, then one in a thousand: a flood stays quiet."""
    return count <= 10 or count % 1000 == 0
