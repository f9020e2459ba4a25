"""Publishing what the stages found: a topic copy acknowledged by Kafka, table rows, a log line.

:class:`Publisher` sends dead letters, anomalies, findings and alert state changes to
their topics and returns only once Kafka acknowledged every message, so the caller may
then let the input's offsets go (at-least-once). The matching table rows are added to
the batch's ``rows`` for the store write that follows; nothing is written here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from trainguard.pipeline.dead_letters import DeadLetter
from trainguard.pipeline.sinks.rows import Row, rows_for
from trainguard.schemas.codec import encode
from trainguard.schemas.records import Alert, Anomaly, Finding

__all__ = ["PublishCounts", "Publisher", "SendTopic"]

log = logging.getLogger(__name__)


class SendTopic(Protocol):
    """What is needed of a Faust topic: ``send`` returns the future of Kafka's ack."""

    async def send(self, *, key: Any = ..., value: Any = ...,
                   headers: Any = ...) -> Awaitable[Any]:
        """Queue one message; the returned awaitable completes when Kafka acknowledged it."""
        ...


@dataclass
class PublishCounts:
    """What a worker published since start (acknowledged by Kafka), for ``/metrics``.

    Every dead letter and every finding of the worker passes through :class:`Publisher`,
    so these are the one count of each, whichever stage made it.
    """

    #: Dead letters by reason (ingest, stages, store refusals, failed deliveries).
    dead_letters: Counter[str] = field(default_factory=Counter)
    #: Findings raised, and findings cleared, by check.
    findings: Counter[str] = field(default_factory=Counter)
    findings_cleared: Counter[str] = field(default_factory=Counter)
    anomalies: int = 0

    def copy(self) -> PublishCounts:
        """A copy that later publishing does not change."""
        return PublishCounts(Counter(self.dead_letters), Counter(self.findings),
                             Counter(self.findings_cleared), self.anomalies)


class Publisher:
    """Sends records to their topics, adds their table rows to a batch, logs each one."""

    def __init__(
        self, worker: str, *, dead_letters: SendTopic, anomalies: SendTopic | None = None,
        findings: SendTopic | None = None, alerts: SendTopic | None = None,
        clock: Callable[[], float] = time.time, counts: PublishCounts | None = None,
    ) -> None:
        self.worker = worker
        self._dead_letters, self._anomalies = dead_letters, anomalies
        self._findings, self._alerts = findings, alerts
        self._clock = clock
        #: Shared with the publishers made by :meth:`with_alerts`.
        self.counts = counts if counts is not None else PublishCounts()

    def with_alerts(self, alerts: SendTopic) -> Publisher:
        """The same publisher (same counts), also publishing alert state changes to ``alerts``."""
        return Publisher(self.worker, dead_letters=self._dead_letters, anomalies=self._anomalies,
                         findings=self._findings, alerts=alerts, clock=self._clock,
                         counts=self.counts)

    async def dead_letters(self, dead: Sequence[DeadLetter], rows: dict[str, list[Row]]) -> None:
        """Copy each rejected message, byte for byte, to the dead-letter topic with headers."""
        if not dead:
            return
        await _send_all(self._dead_letters, [
            (d.source.key, d.source.value, d.headers(self.worker)) for d in dead])
        _extend(rows, "dead_letters", (d.row(self._clock) for d in dead))
        self.counts.dead_letters.update(d.reason for d in dead)
        for d in dead:
            log.warning("dead letter topic=%s partition=%d offset=%d reason=%s error=%s",
                        d.source.topic, d.source.partition, d.source.offset, d.reason, d.message)

    async def anomalies(self, found: Sequence[Anomaly], rows: dict[str, list[Row]]) -> None:
        """Send anomalies keyed by entity and add their ``anomalies`` rows."""
        if not found:
            return
        await _send_all(_need(self._anomalies, "anomalies"),
                        [(a.entity.encode(), encode(a), None) for a in found])
        _extend(rows, "anomalies", (row for a in found for _, row in rows_for(a)))
        self.counts.anomalies += len(found)
        for a in found:
            log.info("anomaly entity=%s metric=%s pattern=%s value=%.4g baseline=%.4g "
                     "score=%.1f first_seen=%.3f", a.entity, a.metric, a.pattern, a.value,
                     a.baseline, a.score, a.first_seen)

    async def findings(self, found: Sequence[Finding], rows: dict[str, list[Row]]) -> None:
        """Send findings keyed by job (so one job's findings stay in order) and add rows."""
        if not found:
            return
        await _send_all(_need(self._findings, "findings"),
                        [((f.job_id or f.cluster).encode(), encode(f), None) for f in found])
        _extend(rows, "findings", (r for f in found for _, r in rows_for(f)))
        for f in found:
            if f.cleared_at is not None:
                self.counts.findings_cleared[f.check] += 1
                log.info("finding cleared check=%s job=%s ranks=%s nodes=%s finding_id=%s",
                         f.check, f.job_id, f.ranks, f.nodes, f.finding_id)
                continue
            self.counts.findings[f.check] += 1
            log.warning("finding check=%s category=%s job=%s ranks=%s nodes=%s summary=%s",
                        f.check, f.category, f.job_id, f.ranks, f.nodes, f.summary)

    async def alerts(self, changes: Sequence[Alert], rows: dict[str, list[Row]]) -> None:
        """Send alert state changes keyed by job (delivery starts) and add ``alerts`` rows."""
        if not changes:
            return
        await _send_all(_need(self._alerts, "alerts"),
                        [((a.job_id or a.cluster).encode(), encode(a), None) for a in changes])
        _extend(rows, "alerts", (r for a in changes for _, r in rows_for(a)))
        for a in changes:
            log.warning("alert %s severity=%s check=%s job=%s node=%s rank=%s alert_id=%s "
                        "summary=%s", a.status, a.severity, a.check, a.job_id, a.node, a.rank,
                        a.alert_id, a.summary)


async def _send_all(
    topic: SendTopic, messages: Iterable[tuple[bytes | None, bytes | None, Any]],
) -> None:
    # Queue every message first, then wait for all acks: one round trip, not one each.
    sent = []
    for key, value, headers in messages:
        if headers is None:
            sent.append(await topic.send(key=key, value=value))
        else:
            sent.append(await topic.send(key=key, value=value, headers=headers))
    await asyncio.gather(*sent)


def _extend(rows: dict[str, list[Row]], table: str, new: Iterable[Row]) -> None:
    rows[table] = [*rows.get(table, ()), *new]


def _need(topic: SendTopic | None, name: str) -> SendTopic:
    if topic is None:
        raise RuntimeError(f"publisher has no {name} topic; pass {name}= to Publisher")
    return topic
