"""Where an agent hands its encoded records: the spool (daemon) or Kafka directly (load tools).

:class:`SpoolTransport` is what the node agent daemon uses: every record goes to the
on-disk spool and a sender thread moves it to Kafka, so outages and restarts lose
nothing. :class:`KafkaTransport` sends straight to Kafka; the simulated fleet uses it
to generate load without a spool per simulated node. Both are durable on the Kafka
side: acks=all and an idempotent producer, zstd compression, a short linger. With a node
key every message carries its MAC headers (:mod:`trainguard.schemas.auth`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sender import SpoolSender
from trainguard.agents.spool import Spool
from trainguard.errors import BrokerError
from trainguard.schemas.auth import Headers, NodeKey, sign

__all__ = ["DeliveryCounters", "KafkaTransport", "SpoolTransport", "Transport"]

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
    """A kafka-python producer tuned for small, frequent, must-not-lose messages.

    With ``node_key`` each message is signed as that node unless ``send`` is given
    headers (a load tool signing as many nodes, see ``FleetSigner``).
    """

    def __init__(
        self,
        settings: KafkaProducerSettings,
        *,
        node_key: NodeKey | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ) -> None:
        from kafka import KafkaProducer  # imported here so schemas-only users need no kafka
        from kafka.errors import KafkaError

        factory = producer_factory or KafkaProducer
        self.counters = DeliveryCounters()
        self._node_key = node_key
        self._lock = threading.Lock()
        try:
            self._producer = factory(**settings.producer_kwargs())
        except KafkaError as exc:
            raise BrokerError(f"cannot connect to Kafka at {settings.bootstrap!r}: {exc}") from exc

    def send(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        """Queue one message; the outcome is counted by callbacks."""
        if headers is None and self._node_key is not None:
            headers = sign(self._node_key, topic, key, value)
        try:
            if headers is None:
                future = self._producer.send(topic, key=key, value=value)
            else:
                future = self._producer.send(topic, key=key, value=value, headers=headers)
        except Exception as exc:  # e.g. larger than max_request_size: this message only
            self._failed(topic, key, value, exc)
            return
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


class SpoolTransport:
    """Appends to the spool (never blocks on the network); a sender thread drains it."""

    def __init__(self, spool: Spool, sender: SpoolSender) -> None:
        self.spool = spool
        self.sender = sender

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Spool one message."""
        self.spool.append(topic, key, value)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the spool is drained or ``timeout`` passes (it stays spooled then)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.spool.depth > 0 and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)

    def close(self, timeout: float | None = None) -> None:
        """Drain for up to ``timeout`` seconds, stop the sender, close the spool."""
        self.sender.stop(drain_timeout=10.0 if timeout is None else timeout)
        self.spool.close()
