"""The node agent loop: GPU sample batches, trainers' step batches and heartbeats.

Every tick it reads all GPUs and sends one batch, plus the step records that trainers
handed over since the last tick (one batch per job); a heartbeat every few seconds.

The clock, the collector, the step sources and the transport are injected, so the same
loop drives a real node (wall clock, NVML, spool → Kafka) and a simulation running
faster than real time. Timestamps are UTC epoch seconds from the wall clock; the tick
schedule runs on the monotonic clock, and a tick that overruns its interval is counted
and logged, not silently skipped.

The agent's witness (:mod:`trainguard.agents.collectors.witness`) hashes checkpoint files
and code trees on its own thread; each tick its reports go out on the steps topic, keyed
by the node's job (so they meet the job's checkpoint events in one partition), else by node.

Rank lifecycle events (a rank's process exited, stopped, resumed; the trainer kit's
``bye`` and ``waiting``) and manifests go out each tick in step batches of their job
(:mod:`.rank_batches`), after the job's steps.

Nothing one input can do stops the loop or wedges delivery: a step source that fails is
counted (``collect_errors``) and skipped for that tick; a job's step batch is split so
that every message stays below the producer's ``max_request_size``, and a message that
cannot fit alone goes to the node's dead-letter file instead of the spool.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Final

import msgspec

from trainguard import __version__
from trainguard.agents.collectors.base import GpuCollector
from trainguard.agents.config import AgentConfig
from trainguard.agents.dead_letter_file import LocalDeadLetters
from trainguard.agents.rank_batches import rank_batches
from trainguard.agents.rank_events import JobRankReports
from trainguard.agents.ratelimit import LogLimiter
from trainguard.agents.reporter import CheckpointReport
from trainguard.agents.transport import Transport
from trainguard.schemas.codec import encode
from trainguard.schemas.ranks import EnvManifest, RankEvent
from trainguard.schemas.records import (
    AgentCounters,
    CheckpointEvent,
    GpuSampleBatch,
    Heartbeat,
    RankClaim,
    StepBatch,
    StepRecord,
    WitnessReport,
)
from trainguard.sd_notify import SdNotifier

__all__ = ["ClaimPoll", "NodeAgent", "RankPoll", "StepPoll", "WitnessPoll"]

log = logging.getLogger(__name__)

#: How long after its last step report a job still counts as the node's job (checkpoint
#: saves and eval phases pause step reports for minutes).
_JOB_MEMORY_S = 600.0

#: Room left below ``max_request_size`` for what Kafka adds to a message (key, record
#: and batch headers): a few hundred bytes, with a wide margin.
_KAFKA_OVERHEAD_BYTES: Final = 4096
#: Counters stay within the wire's int64 bound: a heartbeat beyond it would be rejected.
_COUNTER_MAX: Final = 2**63 - 1

#: A source of step records: returns what arrived since the previous call.
StepPoll = Callable[[], Sequence[StepRecord]]
#: A source of witness reports: told the node's job, returns what it hashed since.
WitnessPoll = Callable[[str | None], Sequence[WitnessReport]]
#: A source of refused rank claims (:mod:`trainguard.agents.claims`), per job, since the
#: previous call.
ClaimPoll = Callable[[], Mapping[str, list[RankClaim]]]
#: A source of rank events and manifests (:mod:`trainguard.agents.rank_events`), per job,
#: since the previous call.
RankPoll = Callable[[], Mapping[str, JobRankReports]]


class NodeAgent:
    """One node's agent loop: collect → encode → send."""

    def __init__(
        self,
        config: AgentConfig,
        collector: GpuCollector,
        transport: Transport,
        *,
        step_sources: Sequence[StepPoll] = (),
        checkpoint_sources: Sequence[Callable[[], list[CheckpointReport]]] = (),
        witness_sources: Sequence[WitnessPoll] = (),
        claim_sources: Sequence[ClaimPoll] = (),
        rank_sources: Sequence[RankPoll] = (),
        gauges: Callable[[], Mapping[str, Any]] | None = None,
        dead_letters: LocalDeadLetters | None = None,
        notifier: SdNotifier | None = None,
        clock: Callable[[], float] = time.time,
        on_heartbeat: Callable[[Heartbeat], None] | None = None,
    ) -> None:
        self.config = config
        #: Called with each heartbeat sent (the agent's Prometheus metrics).
        self._on_heartbeat = on_heartbeat
        self._collector = collector
        self._transport = transport
        self._step_sources = step_sources
        self._checkpoint_sources = checkpoint_sources
        self._witness_sources = witness_sources
        self._claim_sources = claim_sources
        self._rank_sources = rank_sources
        self._gauges = gauges
        self._dead_letters = dead_letters
        #: systemd's watchdog, pinged from this loop: a tick that hangs (in NVML, say)
        #: stops the pings, and systemd restarts the agent.
        self._notifier = notifier
        self._clock = clock
        #: The largest message this agent hands to its transport.
        self.max_message_bytes = config.kafka.max_request_size - _KAFKA_OVERHEAD_BYTES
        self._limiter = LogLimiter()
        self._key = config.node.encode()
        self._job: str | None = None
        self._job_seen = 0.0
        self.agent_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self._step_seq = 0
        self._hb_seq = 0
        self._started = clock()
        self._last_heartbeat: float | None = None
        self.batches_sent = 0
        self.steps_sent = 0
        #: Rank events and manifests taken from the sources (sent, or dead-lettered when
        #: too large to travel).
        self.rank_events_sent = 0
        self.manifests_sent = 0
        self.collect_errors = 0
        self.tick_overruns = 0
        #: Messages too large to send, even alone (dead-lettered when a file is configured).
        self.oversized = 0

    def tick(self, ts: float | None = None) -> GpuSampleBatch | None:
        """Collect and send one sample batch (and pending steps) at event time ``ts``."""
        now = self._clock() if ts is None else ts
        batch = None
        steps = self._poll_steps()
        if len(steps) == 1:  # a node that runs one job: its GPUs belong to that job
            self._job, self._job_seen = next(iter(steps)), now
        job = self._current_job(now)
        try:
            gpus = self._collector.collect(now)
        except Exception:  # a collector bug must not kill the daemon; it is counted
            self.collect_errors += 1
            log.exception("collect failed node=%s seq=%d", self.config.node, self._seq)
        else:
            batch = GpuSampleBatch(
                cluster=self.config.cluster,
                node=self.config.node,
                ts=now,
                seq=self._seq,
                agent_id=self.agent_id,
                driver_version=self._collector.driver_version,
                gpus=gpus,
                job_id=job,
            )
            # Keyed by the job while the node runs one, so that the job's GPU samples meet
            # its step records in one partition (the cross-node checks); else by node.
            key = job.encode() if job is not None else self._key
            if self._send(self.config.topics.samples, key, encode(batch)):
                self._seq += 1
                self.batches_sent += 1
        reports = self._take_rank_reports()
        # Manifests before the steps of the same tick: a code_fingerprint finding names the
        # files that differ only if the manifest behind the fingerprint is there already.
        self._send_rank_reports(now, reports, manifests=True)
        self._send_steps(now, steps)
        self._send_rank_reports(now, reports, manifests=False)
        self._send_checkpoints()
        self._send_witness(job)
        self._send_claims(now)
        last = self._last_heartbeat
        if last is None or now - last >= self.config.heartbeat_interval_s:
            self.heartbeat(now)
        return batch

    def _current_job(self, now: float) -> str | None:
        """The job the node's GPUs run at ``now``, as far as its ranks' reports tell."""
        if self._job is not None and now - self._job_seen <= _JOB_MEMORY_S:
            return self._job
        return None

    def _poll_steps(self) -> dict[str, list[StepRecord]]:
        by_job: dict[str, list[StepRecord]] = defaultdict(list)
        for poll in self._step_sources:
            for record in self._poll(poll):
                by_job[record.job_id].append(record)
        return by_job

    def _poll(self, poll: Callable[[], Sequence[Any]]) -> Sequence[Any]:
        """One source's new records; a source that fails costs its records of this tick only."""
        try:
            return poll()
        except Exception as exc:
            self.collect_errors += 1
            held = self._limiter.allow()
            if held is not None:
                log.error("step source failed node=%s source=%r errors=%d (%d more since last "
                          "logged): %r", self.config.node, poll, self.collect_errors, held, exc)
            return ()

    def _send_steps(self, now: float, by_job: dict[str, list[StepRecord]]) -> None:
        node = self.config.node
        for job_id, steps in by_job.items():
            # The agent vouches for the node: a trainer's own idea of its host name (or a
            # claim of another node) is replaced by the node this agent runs on and signs as.
            steps = [s if s.node == node else msgspec.structs.replace(s, node=node)
                     for s in steps]
            # Keyed by job: all of a job's ranks, from every node, meet in one partition.
            for chunk, data in self._step_batches(job_id, steps, now):
                self._transport.send(self.config.topics.steps, job_id.encode(), data)
                self._step_seq += 1
                self.steps_sent += len(chunk)

    def _step_batch(self, job_id: str, steps: list[StepRecord], now: float) -> bytes:
        return encode(StepBatch(
            cluster=self.config.cluster, node=self.config.node, job_id=job_id, ts=now,
            seq=self._step_seq, agent_id=self.agent_id, steps=steps,
        ))

    def _step_batches(
        self, job_id: str, steps: list[StepRecord], now: float
    ) -> Iterator[tuple[list[StepRecord], bytes]]:
        """One job's steps as encoded batches below :attr:`max_message_bytes` each."""
        limit = self.max_message_bytes
        data = self._step_batch(job_id, steps, now)
        if len(data) <= limit:  # the common case: one batch, encoded once
            yield steps, data
            return
        # Room for seq's digits to grow while the chunks are numbered.
        base = len(self._step_batch(job_id, [], now)) + 20
        chunk: list[StepRecord] = []
        size = base
        for step in steps:
            n = len(encode(step)) + 1  # encoded as in the batch, plus a comma
            if base + n > limit:
                self._oversized(self.config.topics.steps, job_id.encode(),
                                self._step_batch(job_id, [step], now))
                continue
            if chunk and size + n > limit:
                yield chunk, self._step_batch(job_id, chunk, now)
                chunk, size = [], base
            chunk.append(step)
            size += n
        if chunk:
            yield chunk, self._step_batch(job_id, chunk, now)

    def _oversized(self, topic: str, key: bytes, value: bytes) -> None:
        """A message larger than any the producer sends: dead-letter it, never spool it."""
        self.oversized += 1
        reason = "too_large"
        detail = f"{len(value)} bytes exceed max message {self.max_message_bytes} bytes"
        if self._dead_letters is not None:
            self._dead_letters.add(topic, key, value, reason=reason, detail=detail)
        elif self._limiter.allow() is not None:
            log.error("message dropped node=%s topic=%s reason=%s: %s (total %d)",
                      self.config.node, topic, reason, detail, self.oversized)

    def _send(self, topic: str, key: bytes, value: bytes) -> bool:
        """Hand one message to the transport unless it is too large to ever be sent."""
        if len(value) > self.max_message_bytes:
            self._oversized(topic, key, value)
            return False
        self._transport.send(topic, key, value)
        return True

    def _send_checkpoints(self) -> None:
        for poll in self._checkpoint_sources:
            for report in self._poll(poll):
                fields = msgspec.structs.asdict(report)
                fields["node"] = self.config.node  # as for steps: the node this agent is
                event = CheckpointEvent(cluster=self.config.cluster, **fields)
                # On the steps topic, keyed by job: a job's loads meet its saves.
                self._send(self.config.topics.steps, report.job_id.encode(), encode(event))

    def _send_witness(self, job: str | None) -> None:
        for poll in self._witness_sources:
            for report in self._poll(partial(poll, job)):
                # With the job's checkpoint events when the node runs one, else by node.
                key = report.job_id.encode() if report.job_id is not None else self._key
                self._send(self.config.topics.steps, key, encode(report))

    def _send_claims(self, now: float) -> None:
        """Refused rank claims: a step batch without steps per job, keyed like its steps."""
        for poll in self._claim_sources:
            for job_id, claims in self._poll(functools.partial(_claim_items, poll)):
                if not claims:
                    continue
                batch = StepBatch(cluster=self.config.cluster, node=self.config.node,
                                  job_id=job_id, ts=now, seq=self._step_seq,
                                  agent_id=self.agent_id, steps=[], claims=tuple(claims))
                if self._send(self.config.topics.steps, job_id.encode(), encode(batch)):
                    self._step_seq += 1

    def _take_rank_reports(self) -> list[tuple[str, JobRankReports]]:
        """Every source's rank events and manifests queued since the last tick, per job."""
        taken: list[tuple[str, JobRankReports]] = []
        for poll in self._rank_sources:
            taken += self._poll(functools.partial(_rank_items, poll))
        return taken

    def _send_rank_reports(self, now: float, reports: Sequence[tuple[str, JobRankReports]],
                           *, manifests: bool) -> None:
        """Rank events, or manifests: step batches without steps per job, keyed like its steps."""
        topic = self.config.topics.steps
        for job_id, job_reports in reports:
            key = job_id.encode()
            events = [] if manifests else job_reports.events
            found = job_reports.manifests if manifests else []

            def batch(events: list[RankEvent], manifests: list[EnvManifest],
                      job_id: str = job_id) -> bytes:
                return encode(StepBatch(
                    cluster=self.config.cluster, node=self.config.node, job_id=job_id,
                    ts=now, seq=self._step_seq, agent_id=self.agent_id, steps=[],
                    events=tuple(events), manifests=tuple(manifests)))

            for data in rank_batches(batch, events, found, self.max_message_bytes,
                                     functools.partial(self._oversized, topic, key)):
                self._transport.send(topic, key, data)
                self._step_seq += 1
            self.rank_events_sent += len(events)
            self.manifests_sent += len(found)

    def heartbeat(self, ts: float) -> Heartbeat:
        """Send the agent's liveness, counters and the job its node runs."""
        job = self._current_job(ts)
        extra = dict(self._gauges()) if self._gauges is not None else {}
        # A gauge fed by a hostile input must not push the heartbeat off the wire.
        extra = {k: min(v, _COUNTER_MAX) if isinstance(v, int) else v for k, v in extra.items()}
        counters = AgentCounters(
            batches_sent=self.batches_sent,
            collect_errors=self.collect_errors,
            tick_overruns=self.tick_overruns,
            **extra,
        )
        hb = Heartbeat(
            cluster=self.config.cluster,
            node=self.config.node,
            ts=ts,
            seq=self._hb_seq,
            agent_id=self.agent_id,
            agent_version=__version__,
            uptime_s=max(0.0, ts - self._started),
            backend="simulated" if self._collector.backend == "simulated" else "nvml",
            gpu_count=self._collector.gpu_count,
            counters=counters,
            job_id=job,
        )
        # Keyed like the sample batches: by the job while the node runs one, so the worker
        # judging the job sees this node's heartbeats (and their silence).
        key = job.encode() if job is not None else self._key
        self._transport.send(self.config.topics.heartbeats, key, encode(hb))
        self._hb_seq += 1
        self._last_heartbeat = ts
        if self._on_heartbeat is not None:
            self._on_heartbeat(hb)
        return hb

    def run(self, stop: threading.Event, *, max_ticks: int | None = None) -> int:
        """Tick every ``interval_s`` (monotonic schedule) until ``stop`` is set; return ticks."""
        interval = self.config.interval_s
        next_at = time.monotonic() + _to_boundary(time.time(), interval)
        self._wait(stop, next_at)
        ticks = 0
        while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
            self.tick()
            ticks += 1
            next_at += interval
            late = time.monotonic() - next_at
            if late > 0:
                # Overran: report it and start the schedule afresh rather than bursting.
                self.tick_overruns += 1
                log.warning(
                    "tick overran its interval node=%s interval_s=%.3f late_s=%.3f overruns=%d",
                    self.config.node, interval, late, self.tick_overruns,
                )
                next_at = time.monotonic() + _to_boundary(time.time(), interval)
            self._wait(stop, next_at)
        return ticks

    def _wait(self, stop: threading.Event, until: float) -> None:
        """Wait for the monotonic time ``until`` (or ``stop``), pinging the watchdog meanwhile.

        The wait is cut into slices of the watchdog's period, so an interval longer than
        ``WatchdogSec`` does not read as a hang; a hung tick never reaches this ping.
        """
        notifier = self._notifier
        if notifier is None or notifier.interval_s is None:
            stop.wait(max(0.0, until - time.monotonic()))
            return
        while True:
            notifier.watchdog()
            left = until - time.monotonic()
            if left <= 0 or stop.wait(min(left, notifier.interval_s)):
                return


def _claim_items(poll: ClaimPoll) -> list[tuple[str, list[RankClaim]]]:
    return list(poll().items())


def _rank_items(poll: RankPoll) -> list[tuple[str, JobRankReports]]:
    return list(poll().items())


def _to_boundary(wall: float, interval: float) -> float:
    """Seconds from ``wall`` to the next multiple of ``interval`` of the wall clock.

    Every node's agent samples on the same wall-clock boundaries (NTP keeps nodes within
    milliseconds), so the pipeline can compare nodes' samples of the *same* instant: a
    node whose training process exited is then told apart from a whole job stopping on
    its first sample (see trainguard.pipeline.consistency.devices), instead of after several.
    """
    return (-wall) % interval
