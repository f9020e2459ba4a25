"""A simulated fleet: many node agents in one process, for the demo, tests and benchmarks.

Each node has its own :class:`NodeAgent` and :class:`SimulatedGpus`; they share one
transport (one Kafka producer), as a load generator should. ``realtime=False`` sends
ticks back to back with event timestamps ``interval_s`` apart: faster than real time,
same results downstream (the pipeline works in event time). With a ``signer`` each node's
messages are signed as that node (a load tool holds the fleet secret; a real node only
its own key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from trainguard.agents.collectors.simulated import SimulatedGpus
from trainguard.agents.config import AgentConfig
from trainguard.agents.daemon import NodeAgent
from trainguard.agents.transport import Transport
from trainguard.schemas.auth import FleetSigner, Headers

__all__ = ["SignedAs", "SimulatedFleet"]


class _SendsHeaders(Transport, Protocol):
    def send(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        """Queue one message with these headers."""
        ...


class SignedAs:
    """A view of a shared transport that signs every message as one node."""

    def __init__(self, transport: _SendsHeaders, node: str, signer: FleetSigner) -> None:
        self._transport, self._node, self._signer = transport, node, signer

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Sign and queue one message."""
        self._transport.send(topic, key, value,
                             self._signer.headers(self._node, topic, key, value))

    def flush(self, timeout: float | None = None) -> None:
        """Flush the shared transport."""
        self._transport.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Closing a view closes nothing: the shared transport's owner closes it."""


class SimulatedFleet:
    """``nodes`` simulated nodes named ``<prefix>-000``... with ``config.sim_gpus`` GPUs each."""

    def __init__(
        self,
        config: AgentConfig,
        transport: Transport,
        *,
        nodes: int,
        node_prefix: str = "sim-node",
        seed: int = 0,
        signer: FleetSigner | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self.transport = transport
        self.collectors: dict[str, SimulatedGpus] = {}
        self.agents: list[NodeAgent] = []
        for i in range(nodes):
            name = f"{node_prefix}-{i:03d}"
            collector = SimulatedGpus(name, config.sim_gpus, seed=seed)
            self.collectors[name] = collector
            own: Transport = transport
            if signer is not None:  # the transport must take headers (KafkaTransport does)
                own = SignedAs(transport, name, signer)  # type: ignore[arg-type]
            self.agents.append(NodeAgent(replace(config, node=name), collector, own))
        self.interval_s = config.interval_s

    def tick(self, ts: float) -> int:
        """Send one batch from every node at event time ``ts``; return batches sent."""
        return sum(1 for agent in self.agents if agent.tick(ts) is not None)

    def run(
        self,
        ticks: int,
        *,
        start_ts: float | None = None,
        realtime: bool = True,
        stop: threading.Event | None = None,
        on_tick: Callable[[int, int], None] | None = None,
    ) -> int:
        """Run ``ticks`` ticks; return batches sent. ``on_tick(tick, sent)`` reports progress."""
        stop = stop or threading.Event()
        t0 = time.time() if start_ts is None else start_ts
        sent = 0
        next_at = time.monotonic()
        for i in range(ticks):
            if stop.is_set():
                break
            sent += self.tick(t0 + i * self.interval_s)
            if on_tick is not None:
                on_tick(i + 1, sent)
            if realtime:
                next_at += self.interval_s
                stop.wait(max(0.0, next_at - time.monotonic()))
        self.transport.flush(timeout=60)
        return sent
