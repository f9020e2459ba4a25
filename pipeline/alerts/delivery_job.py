"""Alerts → receivers: the delivery agent's work, free of Faust.

:class:`DeliveryJob` hands each alert state change read from the alerts topic to the
:class:`~trainguard.pipeline.alerts.delivery.Dispatcher` and holds the message's offset
(:class:`~trainguard.pipeline.offsets.HeldOffsets`) until every receiver took the alert or
gave up. A give-up is a dead letter: the alert's bytes go to the dead-letter topic with
the receiver and its last error, and a ``dead_letters`` row records it. The delivery
ledger goes to the ``alert_deliveries`` table and is read back at start, so a replay
sends nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from trainguard.pipeline.alerts.alert_job import LOOKBACK_S, RowWrite, reject
from trainguard.pipeline.alerts.delivery import Dispatcher, MemoryLedger
from trainguard.pipeline.alerts.receivers import ReceiverConfig
from trainguard.pipeline.dead_letters import DeadLetter, RawMessage
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.pipeline.sinks.rows import Row
from trainguard.schemas.codec import RecordDecoder, RecordError, encode
from trainguard.schemas.records import Alert

__all__ = ["DeliveryJob"]

log = logging.getLogger(__name__)

#: Builds the dispatcher from the job's ledger and its give-up callback.
DispatcherFactory = Callable[[MemoryLedger, Callable[[Alert, str, str], None]], Dispatcher]


class DeliveryJob:
    """Delivers alerts read from the alerts topic; acks each once every receiver settled.

    ``read_delivered(since)`` and ``read_open(since)`` read the store (off the event loop).
    """

    def __init__(
        self, receivers: Sequence[ReceiverConfig], publisher: Publisher, write: RowWrite,
        offsets: HeldOffsets, *, alerts_topic: str,
        read_delivered: Callable[[float], Awaitable[Any]],
        read_open: Callable[[float], Awaitable[Sequence[Alert]]],
        clock: Callable[[], float] = time.time, dispatcher: DispatcherFactory | None = None,
    ) -> None:
        self._receivers, self._publisher, self._write = receivers, publisher, write
        self._offsets, self._topic, self._clock = offsets, alerts_topic, clock
        self._read_delivered, self._read_open = read_delivered, read_open
        self.ledger = MemoryLedger()
        make = dispatcher or (lambda ledger, failed: Dispatcher(receivers, ledger,
                                                                on_failed=failed))
        self.dispatcher = make(self.ledger, self._on_failed)
        self._decoder: RecordDecoder[Alert] = RecordDecoder(Alert)
        self._failed: list[DeadLetter] = []
        # The message each alert in delivery came from, for its dead letter on a give-up.
        self._sources: dict[int, tuple[Alert, RawMessage]] = {}
        self._started = asyncio.Event()

    async def start(self) -> None:
        """Preload the ledger, start the receivers, keep firing alerts alive."""
        since = self._clock() - LOOKBACK_S
        keys = await self._read_delivered(since)
        self.ledger.preload(keys)
        await self.dispatcher.start()
        # Alertmanager forgets alerts nobody re-sends: keep those still firing alive.
        self.dispatcher.keep_alive(await self._read_open(since))
        log.info("alert delivery started receivers=%s delivered_known=%d",
                 ",".join(r.name for r in self._receivers), len(keys))
        self._started.set()

    async def wait_started(self) -> None:
        """Return once :meth:`start` finished."""
        await self._started.wait()

    async def stop(self, drain_s: float = 5.0) -> None:
        """Let queued deliveries drain for ``drain_s``; what is left is replayed later."""
        await self.dispatcher.stop(drain_s=drain_s)

    async def handle(self, events: Sequence[Any]) -> None:
        """Submit one batch of alert events; their offsets go once delivery settled."""
        alerts: list[Alert] = []
        held: list[Any] = []
        for e in events:
            try:
                alert = self._decoder.decode(e.message.value)
            except RecordError as exc:
                await reject(self._publisher, self._write, e.message, exc)
                continue
            alerts.append(alert)
            held.append(e)
            self._sources[id(alert)] = (alert, RawMessage.of(e.message))
        if not alerts:
            return
        self._offsets.hold(held)  # until every receiver took it or gave up
        done = await self.dispatcher.submit(alerts)
        done.add_done_callback(lambda _: self._forget(alerts))
        self._offsets.release_when(done, held)

    async def flush(self) -> None:
        """Write the ledger's new rows and the give-ups (as dead letters) to the store."""
        rows: dict[str, list[Row]] = {"alert_deliveries": self.ledger.take_rows()}
        if self._failed:
            failed, self._failed = self._failed, []
            await self._publisher.dead_letters(failed, rows)
        if any(rows.values()):
            await self._write(rows)

    def report(self) -> None:
        """Log each receiver's counters."""
        for name, c in self.dispatcher.stats().items():
            log.info("delivery receiver=%s sent=%d retries=%d failed=%d queued=%d resent=%d "
                     "skipped=%d", name, c["sent"], c["retries"], c["failed"], c["queued"],
                     c["resent"], c["skipped"])

    def health(self) -> dict[str, float]:
        """Alerts waiting for a receiver, and deliveries given up since start."""
        stats = self.dispatcher.stats().values()
        return {"alerts_queued": float(sum(c["queued"] for c in stats)),
                "deliveries_failed_total": float(sum(c["failed"] for c in stats))}

    def _on_failed(self, alert: Alert, receiver: str, reason: str) -> None:
        # The alert stays in the alerts table; the dead letter says which receiver never got it.
        held = self._sources.get(id(alert))
        if held is not None and held[0] is alert:
            source = held[1]
        else:  # not from this job's stream (a keep-alive re-send): no offset to name
            value = encode(alert)
            source = RawMessage(self._topic, -1, -1, (alert.job_id or alert.cluster).encode(),
                                value)
        self._failed.append(DeadLetter(source, "delivery_failed",
                                       f"receiver={receiver}: {reason}"))
        log.error("alert delivery failed receiver=%s alert_id=%s status=%s reason=%s",
                  receiver, alert.alert_id, alert.status, reason)

    def _forget(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            held = self._sources.get(id(alert))
            if held is not None and held[0] is alert:
                del self._sources[id(alert)]
