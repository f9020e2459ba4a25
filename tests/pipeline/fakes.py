"""Broker-free stand-ins for the Faust objects the glue touches: topics, events, a clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from trainguard.pipeline.dead_letters import RawMessage
from trainguard.schemas.records import Anomaly


@dataclass
class FakeMessage:
    """A Faust message: Kafka coordinates plus the reference count Faust acks by."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = b"k"
    value: bytes | None = b"{}"
    timestamp: float | None = None  # no Kafka timestamp: the window uses the wall clock
    refcount: int = 1  # Faust's own reference, dropped when take_events acks the batch
    acked: bool = False
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    def incref(self) -> None:
        self.refcount += 1


@dataclass
class FakeEvent:
    """A Faust event: ``ack()`` drops one reference, True when it was the last."""

    message: FakeMessage

    def ack(self) -> bool:
        self.message.refcount -= 1
        if self.message.refcount == 0:
            self.message.acked = True
            return True
        return False


def events(topic: str, offsets: range | list[int], partition: int = 0,
           values: list[bytes] | None = None) -> list[FakeEvent]:
    """Events at ``offsets`` of one partition (values default to ``b'{}'``)."""
    vals = values or [b"{}"] * len(offsets)
    return [FakeEvent(FakeMessage(topic, partition, o, value=v))
            for o, v in zip(offsets, vals, strict=True)]


def raw(batch: list[FakeEvent]) -> list[RawMessage]:
    """The plain messages of ``batch``, as the raw consumer hands them to a handler."""
    return [RawMessage.of(e.message) for e in batch]


def faust_acks(batch: list[FakeEvent]) -> None:
    """What take_events does when the agent body returns: drop Faust's own reference."""
    for e in batch:
        e.ack()


@dataclass
class Sent:
    key: Any
    value: Any
    headers: Any
    ack: asyncio.Future[None]


@dataclass
class FakeTopic:
    """A topic whose ``send`` returns the future of Kafka's ack (acked at once by default)."""

    auto_ack: bool = True
    sent: list[Sent] = field(default_factory=list)

    async def send(self, *, key: Any = None, value: Any = None, headers: Any = None) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            future.set_result(None)
        self.sent.append(Sent(key, value, headers, future))
        return future

    def ack_all(self) -> None:
        for s in self.sent:
            if not s.ack.done():
                s.ack.set_result(None)

    @property
    def header_names(self) -> list[list[str]]:
        return [[name for name, _ in s.headers] for s in self.sent]


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def run(coro: Any, timeout: float = 5.0) -> Any:
    """Run one coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def spin(n: int = 5) -> None:
    """Let ready callbacks and tasks run."""
    for _ in range(n):
        await asyncio.sleep(0)


def anomaly(t: float = 1_700_000_000.0, **kw: Any) -> Anomaly:
    """A wire ``Anomaly`` record (a collapsed GPU), fields overridable."""
    fields: dict[str, Any] = dict(
        cluster="c1", entity_kind="gpu", entity="node-03/2", node="node-03", gpu_index=2,
        job_id="job-1", metric="util_gpu_pct", pattern="level_shift", first_seen=t - 5, ts=t,
        value=12.0, baseline=97.0, scale=1.5, score=-56.0, window=300,
        detector="cusum", detector_version="1",
    )
    fields.update(kw)
    return Anomaly(**fields)
