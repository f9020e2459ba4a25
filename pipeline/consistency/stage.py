"""The consistency stage: decoded records in, :class:`~trainguard.schemas.records.Finding` s out.

Plain Python and numpy, no Faust: the worker feeds :meth:`ConsistencyStage.observe` with
each batch of decoded records and calls :meth:`ConsistencyStage.flush` periodically so
that the steps of a job whose records stopped still close. Everything runs in event time,
*per job*: each job's watermark is the largest event time seen for it (steps, checkpoint
events and its GPU sample batches), so a replay gives the same findings, with the same
ids, and no job's records can move another job's time. Once a job's records stop, its
time goes on at wall-clock speed (:class:`~trainguard.pipeline.clocks.EventClocks`), so
its last steps still close.

Memory is bounded: per job, only open steps, a few numbers per rank and per node, each
rank's last ``max_checkpoints`` saves and the open findings; at most ``max_jobs`` jobs (past it
the least recently seen is evicted and counted, ``evicted_jobs``), and a job silent for
``job_idle_s`` of wall-clock time is forgotten.

A step batch's rank events (processes exited, stopped, waiting in a collective, saying
bye) feed the job's ``rank_exited`` / ``rank_hung`` checks, judged on the job's event
clock: its GPU sample batches and its nodes' heartbeats move that clock on while no step
flows (a hung job steps no more), and :meth:`ConsistencyStage.flush` judges them too.

Heartbeats (and every sample batch, with a job or without) feed the
:class:`~trainguard.pipeline.consistency.silence.SilenceWatch`: a node whose GPUs run a job
and whose agent stopped heartbeating is an ``agent_silent`` finding, judged on every
:meth:`ConsistencyStage.flush`.

State moves between workers per input partition (:meth:`ConsistencyStage.export`,
:meth:`~ConsistencyStage.load`, :meth:`~ConsistencyStage.drop`; the
:class:`~trainguard.pipeline.snapshots.PartitionedState` of
:mod:`~trainguard.pipeline.consistency.handoff`): a job belongs to the partition of its
step records, so a worker that takes a partition over resumes its jobs' checks.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence

from trainguard.pipeline.clocks import EventClocks
from trainguard.pipeline.consistency.codec import StateError, layout_fingerprint
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import FindingTracker
from trainguard.pipeline.consistency.handoff import (
    SavedJob,
    encode_partition,
    load_partition,
    seal_partition,
)
from trainguard.pipeline.consistency.job import JobState
from trainguard.pipeline.consistency.silence import SilenceWatch
from trainguard.schemas.records import (
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Heartbeat,
    Record,
    StepBatch,
    StepRecord,
    WitnessReport,
)

__all__ = ["ConsistencyStage"]

log = logging.getLogger(__name__)

_COUNTERS = ("late_records", "malformed_records", "forced_closes", "restarts",
             "steps_closed", "loads_checked", "unknown_loads", "conflicting_records",
             "conflicting_saves", "refused_saves", "unwitnessed_saves", "witness_refused",
             "rank_claims", "rank_events", "rank_events_dropped", "manifests_evicted",
             "restarts_unverified")


class ConsistencyStage:
    """Cross-rank and cross-node consistency checks over every job in the input.

    ``clock`` is the wall clock: it moves a job's time on once its records stop, and
    decides when a silent job is forgotten.
    """

    def __init__(self, config: ConsistencyConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config or ConsistencyConfig()
        #: Every tracked job, least recently seen first (a dict keeps insertion order).
        self.jobs: dict[str, JobState] = {}
        self._clock = clock
        self._clocks = EventClocks(clock, max_keys=self.config.max_jobs)
        #: Nodes' heartbeats and jobs: which agents went silent (``agent_silent``).
        self.silence = SilenceWatch(self.config, clock)
        self.expired_jobs = 0
        self.evicted_jobs = 0
        self._retired = dict.fromkeys(_COUNTERS, 0)
        self._next_expiry = -math.inf
        #: job → (input partition, whether a step-topic record named it): see handoff.
        self._owners: dict[str, tuple[str, bool]] = {}
        self._layout = ""
        #: Jobs installed from snapshots, snapshots refused, jobs a snapshot left out.
        self.state_jobs_restored = self.state_rejected = self.state_jobs_left_out = 0

    @property
    def watermark(self) -> float:
        """The newest event time of any job: for tests and metrics, it decides nothing."""
        return max((j.asm.watermark for j in self.jobs.values()), default=-math.inf)

    def job_watermark(self, job_id: str) -> float:
        """The newest event time of the job's records (``-inf`` for a job unknown)."""
        return self._clocks.newest(job_id)

    def job_now(self, job_id: str) -> float:
        """The job's event time now: its watermark, then the wall clock once it went quiet."""
        return self._clocks.now(job_id)

    def observe(
        self, records: Sequence[Record], broker_ts: Sequence[float | None] | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[Finding]:
        """Take a batch of records; return the findings they completed.

        Step batches and records, checkpoint events and sample batches that name their
        job are used, and the agents' witness reports that name one; anything else is
        ignored. ``broker_ts`` is each record's Kafka
        timestamp, for the nodes' clock skew; ``sources`` each record's input partition
        (``topic:partition``), which decides where its job's state is snapshotted.
        """
        out: list[Finding] = []
        touched: dict[str, JobState] = {}
        working = self.silence.working
        for i, rec in enumerate(records):
            if sources is not None:
                self._own(rec, sources[i])
            # The two usual kinds first, without an isinstance chain.
            if type(rec) is GpuSampleBatch:
                out += self._samples(rec, broker_ts[i] if broker_ts is not None else None,
                                     touched)
            elif type(rec) is StepBatch or isinstance(rec, StepBatch):
                job_id = rec.job_id
                job = touched.get(job_id) or self._touch(job_id, rec.cluster, touched)
                if rec.claims:
                    job.claimed(rec.claims, rec.node)
                steps = rec.steps
                if steps:
                    working(rec.node, rec.cluster, job_id, rec.ts)
                if not [step for step in steps if step.job_id != job_id]:
                    job.asm.add_many(job.aligned(steps), rec.node)
                else:  # an agent mixing jobs in one batch: route each record
                    for step in steps:
                        other = self._touch(step.job_id, rec.cluster, touched)
                        other.asm.add(other.aligned([step])[0], rec.node)
                if rec.events:  # after the steps: they tell the world size
                    job.rank_events(rec.events, rec.node)
                if rec.manifests:
                    job.manifests.add(rec.manifests)
            elif isinstance(rec, StepRecord):
                job = self._touch(rec.job_id, None, touched)
                job.asm.add(job.aligned([rec])[0])
            elif isinstance(rec, CheckpointEvent):
                job = self._touch(rec.job_id, rec.cluster, touched)
                rec = job.aligned([rec])[0]
                if rec.action == "load":
                    job.asm.loaded(rec.rank, rec.ts)
                else:
                    job.asm.advance(rec.ts)
                job.pending_events.append(rec)
            elif isinstance(rec, WitnessReport) and rec.job_id is not None:
                job = self._touch(rec.job_id, rec.cluster, touched)
                rec = job.aligned([rec])[0]
                job.asm.advance(rec.ts)
                job.pending_witness.append(rec)
            elif isinstance(rec, GpuSampleBatch):
                out += self._samples(rec, broker_ts[i] if broker_ts is not None else None,
                                     touched)
            elif isinstance(rec, Heartbeat):
                self.silence.heartbeat(rec)
                if rec.job_id is not None:
                    self.silence.working(rec.node, rec.cluster, rec.job_id, rec.ts)
                    if rec.job_id in self.jobs:  # moves a known job's time (no steps flow
                        # while its ranks hang); never makes a job of its own
                        self._touch(rec.job_id, rec.cluster, touched).asm.advance(rec.ts)
        for job in touched.values():
            out += job.finish(job.asm.watermark)
            self._clocks.advance(job.job_id, job.asm.watermark)
        self._expire()
        return out

    def _samples(self, rec: GpuSampleBatch, broker_ts: float | None,
                 touched: dict[str, JobState]) -> list[Finding]:
        """One sample batch: its node's job (``agent_silent``) and its job's device checks."""
        self.silence.working(rec.node, rec.cluster, rec.job_id, rec.ts)
        if rec.job_id is None:
            return []
        return self._touch(rec.job_id, rec.cluster, touched).add_samples(rec, broker_ts)

    def flush(self, now: float | None = None,
              on_error: Callable[[str, Exception], None] | None = None) -> list[Finding]:
        """Close every open step whose wait expired at event time ``now``.

        ``now`` defaults to each job's own time (:meth:`job_now`: its watermark, moved on
        by the wall clock since its last record), never another job's. An explicit ``now``
        is an *event* time applied to every job (tests, a replay's end). With ``on_error``,
        a job whose checks raise is forgotten and reported to ``on_error(job_id, exc)``;
        the other jobs still close.
        """
        out: list[Finding] = []
        for job in list(self.jobs.values()):
            if job.asm.open_steps or job.witness.pending or job.ranks.active:
                at = self.job_now(job.job_id) if now is None else now
                try:
                    out += job.close(max(at, job.asm.watermark))
                except Exception as exc:
                    if on_error is None:
                        raise
                    self.forget(job.job_id)
                    on_error(job.job_id, exc)
        out += self.silence.judge(self.job_watermark, now, self._ranks_on)
        self._expire()
        return out

    def partitions(self) -> set[str]:
        """Input partitions whose jobs this stage holds."""
        return {self._owners[j][0] for j in self.jobs if j in self._owners}

    def export(self, part: str) -> bytes:
        """The state of the jobs of input partition ``part`` (see handoff)."""
        return self.export_later(part)()

    def export_later(self, part: str) -> Callable[[], bytes]:
        """Encode ``part``'s jobs now; the call returned compresses them (off the loop)."""
        ids = [j for j in self.jobs if self._owners.get(j, ("", False))[0] == part]
        raw, left_out = encode_partition(self, ids, self.layout())
        if left_out:
            self.state_jobs_left_out += left_out
            log.warning("consistency state partial partition=%s jobs=%d left_out=%d "
                        "max_state_bytes=%d", part, len(ids), left_out,
                        self.config.max_state_bytes)
        return functools.partial(seal_partition, raw)

    def load(self, part: str, blob: bytes) -> int:
        """Install partition ``part``'s exported jobs; return how many (0: refused)."""
        try:
            saved = load_partition(blob, self, self.layout())
        except StateError as exc:
            self.state_rejected += 1
            log.warning("consistency state refused partition=%s bytes=%d error=%s; its "
                        "jobs start fresh (state_rejected=%d)", part, len(blob), exc,
                        self.state_rejected)
            return 0
        try:
            restored = sum(self._adopt(s, part) for s in saved)
        except Exception as exc:  # checked above; should a restored job still not fit
            self.drop(part)
            self.state_rejected += 1
            log.warning("consistency state not installed partition=%s error=%s: %s; its "
                        "jobs start fresh", part, type(exc).__name__, exc)
            return 0
        self.state_jobs_restored += restored
        return restored

    def drop(self, part: str) -> int:
        """Forget the jobs of partition ``part`` (now another worker's); return how many."""
        ids = [j for j in self.jobs if self._owners.get(j, ("", False))[0] == part]
        for job_id in ids:
            self._retire(self.jobs[job_id])
            self.silence.drop(job_id)
        return len(ids)

    def owned_by_steps(self, job_id: str) -> bool:
        """Whether a step-topic record decided the job's partition."""
        return self._owners.get(job_id, ("", False))[1]

    def clock_saved(self, job_id: str) -> float | None:
        """The job's newest event time, to resume its clock elsewhere."""
        return self._clocks.saved(job_id)

    def layout(self) -> str:
        """The fingerprint a snapshot must carry to load here (code shape and settings)."""
        if not self._layout:
            sample = [JobState("j", "c", self.config),
                      FindingTracker("c", "j", clear_steps=1, repeat_s=1.0, max_open=1)]
            self._layout = layout_fingerprint(sample, self.config)
        return self._layout

    def _own(self, rec: Record, part: str) -> None:
        strong = _OWNS.get(type(rec))
        job_id = getattr(rec, "job_id", None)
        if strong is None or job_id is None:
            return
        if strong:
            self._owners[job_id] = (part, True)
            return
        held = self._owners.get(job_id)
        # A heartbeat never makes a job of its own (see observe): only known jobs.
        if (held is None and (type(rec) is GpuSampleBatch or job_id in self.jobs)) or (
                held is not None and not held[1]):
            self._owners[job_id] = (part, False)

    def _adopt(self, saved: SavedJob, part: str) -> bool:
        """Install one restored job, unless live records made it here already."""
        job = saved.job
        if job.job_id in self.jobs:
            return False
        if len(self.jobs) >= self.config.max_jobs:
            self._evict({})
        self.jobs[job.job_id] = job
        self._owners[job.job_id] = (part, saved.strong)
        if saved.clock is not None:
            self._clocks.restore(job.job_id, saved.clock)
        self.silence.restore(job.job_id, saved.silence)
        return True

    def _ranks_on(self, job_id: str, node: str) -> tuple[int, ...]:
        job = self.jobs.get(job_id)
        return job.asm.ranks_on(node) if job is not None else ()

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
        totals["agent_restarts"] = self.silence.restarts
        totals["nodes_tracked"] = self.silence.nodes
        totals["nodes_evicted"] = self.silence.evicted
        totals["state_jobs_restored"] = self.state_jobs_restored
        totals["state_rejected"] = self.state_rejected
        totals["state_jobs_left_out"] = self.state_jobs_left_out
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
        # A scan of every job: cheap once a minute, too dear per batch. Wall-clock time:
        # one job's records must not make the others look silent.
        now = self._clock()
        if now < self._next_expiry:
            return
        self._next_expiry = now + min(60.0, self.config.job_idle_s / 4)
        idle_s = self.config.job_idle_s
        for job in [j for j in self.jobs.values() if self._clocks.idle_for(j.job_id) > idle_s]:
            self._retire(job)
            self.expired_jobs += 1

    def _retire(self, job: JobState) -> None:
        for name, value in _job_counters(job).items():
            self._retired[name] += value
        del self.jobs[job.job_id]
        self._clocks.forget(job.job_id)
        self._owners.pop(job.job_id, None)


#: Record types that decide their job's partition: step-topic ones for good (True), sample
#: batches and heartbeats until a step-topic record comes (False).
_OWNS: dict[type, bool] = {StepBatch: True, StepRecord: True, CheckpointEvent: True,
                           WitnessReport: True, GpuSampleBatch: False, Heartbeat: False}


def _job_counters(job: JobState) -> dict[str, int]:
    asm = job.asm
    return {"late_records": asm.late, "malformed_records": asm.malformed,
            "forced_closes": asm.forced, "restarts": asm.restarts,
            "steps_closed": job.steps_closed, "loads_checked": job.checkpoints.loads_checked,
            "unknown_loads": job.checkpoints.unknown_loads,
            "conflicting_records": asm.conflicting,
            "conflicting_saves": job.checkpoints.conflicting_saves,
            "refused_saves": job.checkpoints.refused_saves,
            "unwitnessed_saves": job.witness.unwitnessed_saves,
            "witness_refused": job.witness.refused, "rank_claims": job.claims,
            "rank_events": job.ranks.events, "rank_events_dropped": job.ranks.dropped,
            "manifests_evicted": job.manifests.evicted,
            "restarts_unverified": job.continuity.unverifiable}



def _worth_logging(count: int) -> bool:
    """Log the first few of a counted event, then one in a thousand: a flood stays quiet."""
    return count <= 10 or count % 1000 == 0
