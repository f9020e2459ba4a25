"""The node agent: every tick, read all GPUs and send one batch; heartbeat every few ticks.

The clock, the collector and the transport are injected, so the same loop drives a
real node (wall clock, NVML, Kafka) and a simulation running faster than real time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from agents.collectors.base import GpuCollector
from agents.config import AgentConfig
from agents.transport import Transport
from schemas.codec import encode
from schemas.records import AgentCounters, GpuSampleBatch, Heartbeat
from trainguard import __version__

__all__ = ["NodeAgent"]

log = logging.getLogger(__name__)


class NodeAgent:
    """One node's agent loop: collect → encode → send."""

    def __init__(
        self,
        config: AgentConfig,
        collector: GpuCollector,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._collector = collector
        self._transport = transport
        self._clock = clock
        self._key = config.node.encode()
        self.agent_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self._hb_seq = 0
        self._started = clock()
        self._last_heartbeat: float | None = None
        self.batches_sent = 0
        self.collect_errors = 0

    def tick(self, ts: float | None = None) -> GpuSampleBatch | None:
        """Collect and send one sample batch at event time ``ts`` (default: now)."""
        now = self._clock() if ts is None else ts
        try:
            gpus = self._collector.collect(now)
        except Exception:  # a collector bug must not kill the daemon; it is counted
            self.collect_errors += 1
            log.exception("collect failed node=%s seq=%d", self.config.node, self._seq)
            return None
        batch = GpuSampleBatch(
            cluster=self.config.cluster,
            node=self.config.node,
            ts=now,
            seq=self._seq,
            agent_id=self.agent_id,
            driver_version=self._collector.driver_version,
            gpus=gpus,
        )
        self._transport.send(self.config.topics.samples, self._key, encode(batch))
        self._seq += 1
        self.batches_sent += 1
        if (
            self._last_heartbeat is None
            or now - self._last_heartbeat >= self.config.heartbeat_interval_s
        ):
            self.heartbeat(now)
        return batch

    def heartbeat(self, ts: float) -> Heartbeat:
        """Send the agent's liveness and counters."""
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
            counters=AgentCounters(
                batches_sent=self.batches_sent, collect_errors=self.collect_errors
            ),
        )
        self._transport.send(self.config.topics.heartbeats, self._key, encode(hb))
        self._hb_seq += 1
        self._last_heartbeat = ts
        return hb

    def run(self, stop: threading.Event, *, max_ticks: int | None = None) -> int:
        """Tick every ``interval_s`` on the wall clock until ``stop`` is set; return ticks sent."""
        interval = self.config.interval_s
        next_at = time.monotonic()
        ticks = 0
        while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
            if self.tick() is not None:
                ticks += 1
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))
        self._transport.flush(timeout=30)
        return ticks
