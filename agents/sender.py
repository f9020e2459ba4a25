"""The sender: drains the spool into Kafka, in order, committing only what Kafka acknowledged.

Runs in its own thread so the tick loop never waits on the network. During an outage
each attempt fails after ``delivery_timeout_ms``; the sender backs off (full jitter,
:mod:`trainguard.agents.backoff`: a random delay up to 0.5 s doubling to 30 s, so a
fleet's agents do not retry in lockstep) and tries again, while the spool absorbs new
records. Entries acknowledged after a failed one are remembered and not re-sent, so a
retry does not duplicate them.

With a node key each message is signed as it is sent (:mod:`trainguard.schemas.auth`).

A message Kafka refuses for good (too large, an invalid record: errors that no retry can
fix) is not retried: it goes to the node's dead-letter file
(:class:`~trainguard.agents.dead_letter_file.LocalDeadLetters`) with the error as its
reason, counts as done, and the messages behind it go on.
"""

from __future__ import annotations

import logging
import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from trainguard.agents.backoff import JitteredBackoff
from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.dead_letter_file import LocalDeadLetters
from trainguard.agents.spool import Spool, SpoolEntry
from trainguard.schemas.auth import NodeKey, sign

__all__ = ["PERMANENT_ERRORS", "SpoolSender"]

log = logging.getLogger(__name__)

#: kafka-python errors about the record itself: sending it again can only fail again.
PERMANENT_ERRORS = (
    "MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidRecordError",
    "CorruptRecordError", "CorruptRecordException", "InvalidTimestampError",
    "UnsupportedForMessageFormatError",
)


def _permanent_types() -> tuple[type[BaseException], ...]:
    import kafka.errors

    found = (getattr(kafka.errors, name, None) for name in PERMANENT_ERRORS)
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))


def _reason(exc: BaseException) -> str:
    """``MessageSizeTooLargeError`` → ``message_size_too_large``: a short dead-letter reason."""
    name = re.sub(r"(Error|Exception)$", "", type(exc).__name__) or type(exc).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class SpoolSender:
    """Moves spooled records to Kafka with an idempotent, acks=all producer."""

    def __init__(
        self,
        spool: Spool,
        settings: KafkaProducerSettings,
        *,
        batch_max: int = 1000,
        dead_letters: LocalDeadLetters | None = None,
        producer_factory: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
        node_key: NodeKey | None = None,
        rng: random.Random | None = None,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        from kafka import KafkaProducer  # only the sending process needs kafka-python

        self._spool = spool
        #: Signs each message as it leaves (the spool holds them unsigned, on this node).
        self._node_key = node_key
        self._settings = settings
        self._batch_max = batch_max
        self._clock = clock
        self._stop = threading.Event()
        self._backoff = JitteredBackoff(settings.retry_backoff_s, settings.retry_backoff_max_s,
                                        rng=rng)
        #: Sleeps between retries; returns early on stop() (injectable for tests).
        self._wait = wait or self._stop.wait
        self._skip: set[int] = set()
        self._lat_lock = threading.Lock()
        self._latencies_ms: list[float] = []
        self._dead_letters = dead_letters
        self._permanent = _permanent_types()
        self.sent = 0
        self.errors = 0
        #: Messages Kafka refused for good (dead-lettered when a file is configured).
        self.refused = 0
        self._factory = producer_factory or KafkaProducer
        self._producer: Any = None
        self._thread = threading.Thread(target=self._run, name="spool-sender", daemon=True)

    def _connect(self) -> Any:
        """Create the producer; kafka-python contacts the brokers here, which may be down."""
        settings = self._settings
        try:
            return self._factory(
                **settings.producer_kwargs(),
                # While the broker is down, send() waits this long for metadata, then fails
                # the attempt; the records stay spooled.
                max_block_ms=settings.request_timeout_ms,
                reconnect_backoff_max_ms=5000,
            )
        except Exception as exc:  # NoBrokersAvailable and friends: the agent keeps spooling
            self.errors += 1
            log.warning("kafka unreachable; spooling bootstrap=%s error=%s depth=%d",
                        settings.bootstrap, exc, self._spool.depth)
            return None

    def start(self) -> None:
        """Start draining in the background."""
        self._thread.start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Try to drain what is spooled for ``drain_timeout`` seconds, then stop.

        What is still spooled stays on disk and is sent by the next start.
        """
        deadline = time.monotonic() + drain_timeout
        while self._spool.depth > 0 and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=max(1.0, self._settings.delivery_timeout_ms / 1000 + 5))
        self._close_producer()

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)  # abort, do not send: the spool re-sends
            except Exception as exc:  # unsent records stay spooled; nothing is lost here
                log.debug("producer close error=%s", exc)

    def take_latencies(self) -> tuple[float | None, float | None]:
        """p50 and max of append→ack latency (ms) since the previous call."""
        with self._lat_lock:
            values, self._latencies_ms = self._latencies_ms, []
        if not values:
            return None, None
        return statistics.median(values), max(values)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._producer is None:
                self._producer = self._connect()
                if self._stop.is_set():
                    self._close_producer()
                    break  # connecting outlived stop(): send nothing, the next start will
                if self._producer is None:
                    self._back_off()
                    continue
                # Not reset here: brokers that accept connections may still fail every
                # delivery; only a delivered batch shows that they are back.
            try:
                entries = self._spool.read(self._batch_max, timeout=0.2)
                batch = [e for e in entries if e.seq not in self._skip]
                if not batch:
                    if entries:  # all of them were done earlier, out of order
                        self._commit_through(entries[-1].seq)
                    continue
                sent = self._send(batch)
            except Exception as exc:  # a spool read error, or a bug: never stop sending
                self.errors += 1
                log.exception("spool sender step failed; retrying error=%r", exc)
                sent = False
            if sent:
                self._backoff.reset()
            else:
                # Start over with a fresh producer: after an outage kafka-python's idempotent
                # producer can stay wedged (every send times out), and a new producer id is
                # cheap next to records that never leave the spool.
                self._close_producer()
                self._spool.rewind()
                self._back_off()

    def _back_off(self) -> None:
        """Wait a jittered delay before the next attempt (cut short by stop())."""
        delay = self._backoff.next_delay()
        log.debug("sender backing off delay_s=%.3f attempt=%d", delay, self._backoff.attempt)
        self._wait(delay)

    def _send(self, batch: list[SpoolEntry]) -> bool:
        """Send one batch; commit the done prefix; True if all of it is done.

        Done means acknowledged by Kafka, or refused for good and dead-lettered.
        """
        futures: list[Any] = []
        for entry in batch:
            try:
                futures.append(self._send_one(entry))
            except self._permanent as exc:  # e.g. larger than max_request_size
                futures.append(exc)
            except Exception as exc:  # metadata timeout while the broker is down, mostly
                log.warning("kafka send failed; records stay spooled error=%s depth=%d", exc,
                            self._spool.depth)
                break
        try:
            # Wait for a definitive outcome of what was handed over: every record succeeds or
            # fails within delivery_timeout_ms. Deciding earlier would re-send records that
            # are still on their way, and duplicate them.
            self._producer.flush(timeout=self._settings.delivery_timeout_ms / 1000 + 5)
        except Exception as exc:
            log.warning("kafka flush incomplete error=%s depth=%d", exc, self._spool.depth)
        now = self._clock()
        done: list[bool] = []
        acked = 0
        for entry, future in zip(batch, futures, strict=False):
            refusal = self._refusal(future)
            if refusal is not None:
                self._refuse(entry, refusal)
                done.append(True)
                continue
            ok = future.is_done and future.succeeded()
            done.append(ok)
            if ok:
                acked += 1
                with self._lat_lock:
                    self._latencies_ms.append(max(0.0, (now - entry.appended_at) * 1000))
        done += [False] * (len(batch) - len(done))
        prefix = next((i for i, ok in enumerate(done) if not ok), len(batch))
        for entry, ok in zip(batch[prefix:], done[prefix:], strict=True):
            if ok:
                self._skip.add(entry.seq)  # done out of order: do not send it again
        if prefix:
            self._commit_through(batch[prefix - 1].seq)
        self.sent += acked
        failed = len(batch) - sum(done)
        if failed:
            self.errors += failed
            log.warning("kafka delivery incomplete delivered=%d failed=%d depth=%d",
                        acked, failed, self._spool.depth)
        return failed == 0

    def _send_one(self, entry: SpoolEntry) -> Any:
        """Hand one entry to the producer, signed when this node has a key."""
        if self._node_key is None:
            return self._producer.send(entry.topic, key=entry.key, value=entry.value)
        return self._producer.send(entry.topic, key=entry.key, value=entry.value,
                                   headers=sign(self._node_key, entry.topic, entry.key,
                                                entry.value))

    def _commit_through(self, seq: int) -> None:
        """Commit through ``seq`` and the entries right after it already done out of order."""
        while seq + 1 in self._skip:
            seq += 1
        self._spool.commit(seq)
        self._skip = {s for s in self._skip if s > seq}

    def _refusal(self, future: Any) -> BaseException | None:
        """The permanent error this send ended in, if it did (None: acked, pending, retriable)."""
        if isinstance(future, BaseException):
            return future
        if future.is_done and future.failed() and isinstance(future.exception, self._permanent):
            exc: BaseException = future.exception
            return exc
        return None

    def _refuse(self, entry: SpoolEntry, exc: BaseException) -> None:
        self.refused += 1
        if self._dead_letters is not None:
            self._dead_letters.add(entry.topic, entry.key, entry.value, reason=_reason(exc),
                                   detail=str(exc))
        else:
            log.error("kafka refused a message for good; dropped topic=%s bytes=%d error=%s",
                      entry.topic, len(entry.value), exc)
