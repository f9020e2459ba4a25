"""Findings → alert state changes: one lifecycle per findings partition, free of Faust.

:class:`AlertJob` is the body of the ``alert_on_findings`` agent and of its timers. The
findings topic is keyed by job, so one partition's lifecycle sees every finding of its
jobs, in order. Each batch's state changes go to the alerts topic (acknowledged by
Kafka) and then to the ``alerts`` table before the batch returns, so the findings'
offsets are acknowledged only after both. When partitions move, the new owner restores
the alerts its predecessor left firing (from the store), so nobody is paged twice.
A finding the lifecycle raises on is a dead letter with reason ``stage_error``; the
others of its batch still change alerts (:mod:`trainguard.pipeline.quarantine`).
Baseline anomalies, when the anomalies topic is given, become ticket alerts the same way
(:meth:`AlertJob.handle_anomalies`), in lifecycles of their own per anomalies partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from kafka.partitioner.default import murmur2

from trainguard.pipeline.alerts.anomalies import is_anomaly_alert
from trainguard.pipeline.alerts.approvals import Approval
from trainguard.pipeline.alerts.config import (
    AlertLifecycleConfig,
    Silence,
    integrity_silence_violation,
)
from trainguard.pipeline.alerts.lifecycle import AlertLifecycle
from trainguard.pipeline.clocks import EventClocks
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.quarantine import Quarantine
from trainguard.pipeline.sinks.rows import Row
from trainguard.schemas.codec import RecordDecoder, RecordError
from trainguard.schemas.records import Alert, Anomaly, Finding

__all__ = ["LOOKBACK_S", "AlertJob", "RowWrite", "key_partition", "reject"]

log = logging.getLogger(__name__)

#: Open alerts and deliveries this far back are read from the store at start.
LOOKBACK_S = 7 * 24 * 3600.0

#: Writes table rows to the store (on its thread); completes when they landed.
RowWrite = Callable[[dict[str, list[Row]]], Awaitable[Any]]


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as the producer)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def reject(publisher: Publisher, write: RowWrite, message: Any, error: RecordError) -> None:
    """An undecodable finding or alert: a dead letter with the reason, never a crash."""
    rows: dict[str, list[Row]] = {}
    await publisher.dead_letters([DeadLetter(RawMessage.of(message), error.reason,
                                             error.message)], rows)
    await write(rows)


class AlertJob:
    """Alert lifecycles per findings partition, with their restore, ticks and silences.

    ``read_open(since)``, ``read_silences(now)`` and ``read_approvals(now)`` (change
    approvals, refreshed beside the silences) read the store (off the event loop).
    Each job's alerts run on that job's own time (:meth:`job_now`): the wall clock, or
    the job's own event time where that runs ahead (the newest of its findings, and
    ``event_now(job)``: the consistency stage's newest record of it). A replayed or
    accelerated stream resolves on its own clock, a quiet job's alerts expire in
    wall-clock time, and no record of another job can resolve them.
    """

    def __init__(
        self, config: AlertLifecycleConfig, publisher: Publisher, write: RowWrite, *,
        findings_topic: str, partitions: int,
        read_open: Callable[[float], Awaitable[Sequence[Alert]]],
        read_silences: Callable[[float], Awaitable[Sequence[Silence]]],
        event_now: Callable[[str], float] = lambda _job: -float("inf"),
        clock: Callable[[], float] = time.time,
        read_approvals: Callable[[float], Awaitable[Sequence[Approval]]] | None = None,
        anomalies_topic: str | None = None,
    ) -> None:
        self._config, self._publisher, self._write = config, publisher, write
        self._topic, self._partitions = findings_topic, partitions
        #: Baseline anomalies (keyed by entity) have lifecycles of their own, one per
        #: partition of their topic: tickets (:meth:`handle_anomalies`).
        self._anomalies_topic = anomalies_topic
        self.anomaly_lifecycles: dict[int, AlertLifecycle] = {}
        self._anomaly_decoder: RecordDecoder[Anomaly] = RecordDecoder(Anomaly)
        self._read_open, self._read_silences = read_open, read_silences
        self._event_now, self._clock = event_now, clock
        #: Each job's time as its findings tell it.
        self._times = EventClocks(clock)
        self._decoder: RecordDecoder[Finding] = RecordDecoder(Finding)
        self.lifecycles: dict[int, AlertLifecycle] = {}
        self._silences: list[Silence] = []
        self._read_approvals = read_approvals
        self._approvals: list[Approval] = []
        #: Active silences marked ``integrity`` that break the rule (muting the rest only).
        self.silences_refused = 0
        self._refused: set[str] = set()
        # Cleared while an assignment's open alerts load: a finding judged before that
        # would page again for an alert the previous owner already sent.
        self._ready = asyncio.Event()
        self._ready.set()
        #: Findings the lifecycle raised on (dead letters) and failed ticks, counted.
        self.quarantine = Quarantine()

    def lifecycle(self, partition: int) -> AlertLifecycle:
        """The lifecycle of one findings partition, created with the current silences."""
        lc = self.lifecycles.get(partition)
        if lc is None:
            lc = self.lifecycles[partition] = AlertLifecycle(self._config)
            lc.set_silences(self._silences)
            lc.set_approvals(self._approvals, self.job_now)
        return lc

    def anomaly_lifecycle(self, partition: int) -> AlertLifecycle:
        """The lifecycle of one anomalies partition, created with the current silences."""
        lc = self.anomaly_lifecycles.get(partition)
        if lc is None:
            lc = self.anomaly_lifecycles[partition] = AlertLifecycle(self._config)
            lc.set_silences(self._silences)
        return lc

    def _all_lifecycles(self) -> list[tuple[int, AlertLifecycle]]:
        return [*self.lifecycles.items(), *self.anomaly_lifecycles.items()]

    def firing(self) -> int:
        """How many alerts are open across the partitions held."""
        return sum(len(lc.open_alerts()) for _, lc in self._all_lifecycles())

    async def on_assigned(self, assigned: Iterable[Any]) -> None:
        """Drop the lifecycles of partitions gone elsewhere; restore the new ones'."""
        self._ready.clear()
        try:
            assigned = list(assigned)
            owned = {tp.partition for tp in assigned if tp.topic == self._topic}
            owned_anomalies = {tp.partition for tp in assigned
                               if tp.topic == self._anomalies_topic}
            for part in set(self.lifecycles) - owned:
                del self.lifecycles[part]
            for part in set(self.anomaly_lifecycles) - owned_anomalies:
                del self.anomaly_lifecycles[part]
            new = owned - set(self.lifecycles)
            new_anomalies = owned_anomalies - set(self.anomaly_lifecycles)
            if not new and not new_anomalies:
                return
            found = await self._read_open(self._clock() - LOOKBACK_S)
            for part in sorted(new):
                mine = [a for a in found if not is_anomaly_alert(a.check) and key_partition(
                    (a.job_id or a.cluster).encode(), self._partitions) == part]
                self._restored(part, self.lifecycle(part).restore(mine))
            for part in sorted(new_anomalies):
                # An anomaly's partition is its entity's (the anomalies topic's key).
                mine = [a for a in found if is_anomaly_alert(a.check) and key_partition(
                    str(a.evidence.get("entity")).encode(), self._partitions) == part]
                self._restored(part, self.anomaly_lifecycle(part).restore(mine))
        finally:
            self._ready.set()

    @staticmethod
    def _restored(part: int, n: int) -> None:
        if n:
            log.info("alerts restored partition=%d firing=%d", part, n)

    async def handle_anomalies(self, events: Sequence[Any]) -> None:
        """Feed one batch of anomalies events to their lifecycles: ticket alerts."""
        await self._ready.wait()
        changes: list[Alert] = []
        dead: list[DeadLetter] = []
        for e in events:
            try:
                anomaly = self._anomaly_decoder.decode(e.message.value)
            except RecordError as exc:
                await reject(self._publisher, self._write, e.message, exc)
                continue
            self._times.advance(anomaly.job_id or anomaly.cluster, anomaly.ts)
            try:
                changes += self.anomaly_lifecycle(e.message.partition).observe_anomalies(
                    [anomaly])
            except Exception as exc:
                dead.append(self.quarantine.dead_letter(
                    "alerts", exc, RawMessage.of(e.message), entity=anomaly.entity))
        if dead:
            rows: dict[str, list[Row]] = {}
            await self._publisher.dead_letters(dead, rows)
            await self._write(rows)
        await self._publish(changes)

    async def handle(self, events: Sequence[Any]) -> None:
        """Feed one batch of findings events to their lifecycles; publish what changed."""
        await self._ready.wait()
        by_part: dict[int, list[tuple[Any, Finding]]] = {}
        for e in events:
            try:
                finding = self._decoder.decode(e.message.value)
            except RecordError as exc:
                await reject(self._publisher, self._write, e.message, exc)
                continue
            self._times.advance(finding.job_id or finding.cluster, finding.ts)
            by_part.setdefault(e.message.partition, []).append((e.message, finding))
        changes: list[Alert] = []
        dead: list[DeadLetter] = []
        for part, found in by_part.items():
            lc = self.lifecycle(part)
            # One finding at a time: a finding the lifecycle raises on is a dead letter
            # and costs nothing else (a whole-list call would lose the others' changes).
            for message, finding in found:
                try:
                    changes += lc.observe_findings([finding])
                except Exception as exc:
                    dead.append(self.quarantine.dead_letter(
                        "alerts", exc, RawMessage.of(message), finding_id=finding.finding_id))
        if dead:
            rows: dict[str, list[Row]] = {}
            await self._publisher.dead_letters(dead, rows)
            await self._write(rows)
        await self._publish(changes)

    def job_now(self, job: str) -> float:
        """``job``'s time now (see the class docstring): never behind the wall clock."""
        return max(self._clock(), self._times.newest(job), self._event_now(job))

    async def tick(self) -> None:
        """Advance every lifecycle, each alert to its own job's time."""
        now = self.job_now
        changes: list[Alert] = []
        for part, lc in self._all_lifecycles():
            try:
                changes += lc.tick(now)
            except Exception as exc:  # one partition's bug must not stop the others' alerts
                self.quarantine.failed("alerts_tick", exc, partition=part)
        await self._publish(changes)

    async def refresh_silences(self) -> None:
        """Re-read the active silences; on a store error the old set stays.

        A silence marked ``integrity`` that breaks the integrity silence rule (no reason,
        no creator, or too long: someone wrote the row by hand) keeps muting the other
        categories only; it is logged once and counted in :attr:`silences_refused`.
        """
        try:
            read = list(await self._read_silences(self._clock()))
        except Exception as exc:  # a store hiccup must not stop paging
            log.warning("silences not refreshed error=%s", exc)
            return
        active = self._screen(read)
        self._silences[:] = active
        for _, lc in self._all_lifecycles():
            lc.set_silences(active)

    async def refresh_approvals(self) -> None:
        """Re-read the change approvals; resolve the pages they now sanction.

        On a store error the old set stays (logged): an approval late by one refresh
        leaves a page open a little longer, never mutes one.
        """
        if self._read_approvals is None:
            return
        try:
            read = list(await self._read_approvals(self._clock()))
        except Exception as exc:  # a store hiccup must not stop paging
            log.warning("change approvals not refreshed error=%s", exc)
            return
        self._approvals[:] = read
        changes: list[Alert] = []
        for lc in self.lifecycles.values():
            changes += lc.set_approvals(read, self.job_now)
        for alert in changes:
            log.info("alert resolved by change approval alert_id=%s job=%s approval_id=%s",
                     alert.alert_id, alert.job_id, alert.labels.get("approved"))
        await self._publish(changes)

    def _screen(self, silences: Sequence[Silence]) -> list[Silence]:
        limit = self._config.max_integrity_silence_s
        out: list[Silence] = []
        refused: set[str] = set()
        for silence in silences:
            why = integrity_silence_violation(silence, limit)
            if why is None:
                out.append(silence)
                continue
            refused.add(silence.silence_id)
            if silence.silence_id not in self._refused:
                log.warning("silence ignored for integrity findings silence_id=%s job=%s "
                            "node=%s created_by=%r reason=%r why=%s", silence.silence_id,
                            silence.job_id, silence.node, silence.created_by, silence.reason,
                            why)
            out.append(replace(silence, integrity=False))
        self._refused = refused
        self.silences_refused = len(refused)
        return out

    async def _publish(self, changes: Sequence[Alert]) -> None:
        """Alert state changes to the topic (delivery starts) and then to the table."""
        if not changes:
            return
        rows: dict[str, list[Row]] = {}
        await self._publisher.alerts(changes, rows)
        await self._write(rows)
