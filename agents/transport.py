"""Delivery of encoded records to Kafka with kafka-python.

Durable by default: acks=all and an idempotent producer (no duplicates from the
producer's own retries), zstd compression, a short linger so one node's messages
travel in one request. Delivery failures are counted, never hidden; the on-disk spool
that rides out broker outages sits on top of this (see issue 3).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agents.config import KafkaProducerSettings
from trainguard.errors import BrokerError

__all__ = ["DeliveryCounters", "KafkaTransport", "Transport"]

log = logging.getLogger(__name__)


class Transport(Protocol):
    """Where an agent hands its encoded records."""

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one message; never blocks on the network."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued was acknowledged or failed."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Flush and release the connection."""
        ...


@dataclass
class DeliveryCounters:
    """What the transport did since start: for heartbeats and tests."""

    sent: int = 0
    acked: int = 0
    failed: int = 0


class KafkaTransport:
    """A kafka-python producer tuned for small, frequent, must-not-lose messages."""

    def __init__(
        self,
        settings: KafkaProducerSettings,
        *,
        producer_factory: Callable[..., Any] | None = None,
        on_error: Callable[[str, bytes, bytes, Exception], None] | None = None,
    ) -> None:
        from kafka import KafkaProducer  # imported here so schemas-only users need no kafka
        from kafka.errors import KafkaError

        factory = producer_factory or KafkaProducer
        self.counters = DeliveryCounters()
        self._lock = threading.Lock()
        self._on_error = on_error
        try:
            self._producer = factory(
                bootstrap_servers=settings.bootstrap.split(","),
                acks="all",
                enable_idempotence=True,
                compression_type=None if settings.compression == "none" else settings.compression,
                linger_ms=settings.linger_ms,
                request_timeout_ms=settings.request_timeout_ms,
                delivery_timeout_ms=settings.delivery_timeout_ms,
                max_in_flight_requests_per_connection=5,
                client_id="trainguard-agent",
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot connect to Kafka at {settings.bootstrap!r}: {exc}") from exc

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Queue one message; the outcome is counted by callbacks."""
        future = self._producer.send(topic, key=key, value=value)
        with self._lock:
            self.counters.sent += 1
        future.add_callback(self._acked)
        future.add_errback(self._failed, topic, key, value)

    def flush(self, timeout: float | None = None) -> None:
        """Block until queued messages are acknowledged or have failed."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close the producer."""
        self._producer.close(timeout=timeout)

    def _acked(self, _metadata: object) -> None:
        with self._lock:
            self.counters.acked += 1

    def _failed(self, topic: str, key: bytes, value: bytes, exc: Exception) -> None:
        with self._lock:
            self.counters.failed += 1
        log.warning(
            "delivery failed topic=%s key=%s error=%s", topic, key.decode(errors="replace"), exc
        )
        if self._on_error is not None:
            self._on_error(topic, key, value, exc)
