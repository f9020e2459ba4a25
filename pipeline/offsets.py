"""Hold-and-ack of Kafka offsets: a message is acknowledged only once its effects landed.

Faust acknowledges a ``take_events`` batch when the agent body returns, but the batch's
store write (or its alerts' delivery) may still be running then. :class:`HeldOffsets`
takes an extra reference on every message (``incref``) and drops it, oldest write first,
only when the work holding it finished; the message whose last reference goes is passed
to ``on_out`` (Faust's ``sensors.on_message_out``), which lets its offset be committed.
A write that failed is never acknowledged: its messages are consumed again after the
restart (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["HeldOffsets", "landed", "message_out"]

#: Whatever is released once its last reference goes (a Faust event).
Event = Any


def message_out(app: Any) -> Callable[[Event], None]:
    """The ``on_out`` that tells a Faust app's sensors an event's offset may be committed."""

    def out(event: Event) -> None:
        app.sensors.on_message_out(event.message.tp, event.message.offset, event.message)

    return out


def landed(future: asyncio.Future[Any]) -> bool:
    """True when the work behind ``future`` finished without error."""
    return future.done() and not future.cancelled() and future.exception() is None


class HeldOffsets:
    """Events held until the work they wait for lands, then acknowledged in order."""

    def __init__(self, on_out: Callable[[Event], None]) -> None:
        self._on_out = on_out
        # Work still in flight, oldest first, with the events whose offsets it holds.
        self._inflight: deque[tuple[asyncio.Future[Any], Sequence[Event]]] = deque()

    def __len__(self) -> int:
        """How many writes are in flight."""
        return len(self._inflight)

    @staticmethod
    def hold(events: Iterable[Event]) -> None:
        """Take a reference on each event so that Faust's own ack does not release it."""
        for event in events:
            event.message.incref()

    def release(self, events: Iterable[Event]) -> None:
        """Drop the held reference of each event; the last one lets its offset go."""
        for event in events:
            if event.ack():
                self._on_out(event)

    def release_when(self, done: asyncio.Future[Any], events: Sequence[Event]) -> None:
        """Release ``events`` once ``done`` completes; cancelled work is replayed instead."""

        def settle(future: asyncio.Future[Any]) -> None:
            if not future.cancelled():
                self.release(events)

        done.add_done_callback(settle)

    def writes(self) -> list[asyncio.Future[Any]]:
        """The work in flight, oldest first."""
        return [write for write, _ in self._inflight]

    def add(self, write: asyncio.Future[Any], events: Sequence[Event]) -> None:
        """Queue the (already held) events behind ``write``, after every earlier write."""
        self._inflight.append((write, events))

    async def settle_oldest(self) -> None:
        """Wait for the oldest write and release its events; its error propagates."""
        write, events = self._inflight.popleft()
        await write  # a StoreError here means the sink gave up: let the agent crash
        self.release(events)

    async def settle(self, limit: int) -> None:
        """Release what landed, waiting until fewer than ``limit`` writes are in flight."""
        while self._inflight and (len(self._inflight) >= limit or self._inflight[0][0].done()):
            await self.settle_oldest()

    async def settle_done(self) -> None:
        """Release the writes that finished, oldest first, without waiting for any."""
        while self._inflight and self._inflight[0][0].done():
            await self.settle_oldest()

    async def settle_all(self) -> None:
        """Wait for every write in flight and release its events."""
        while self._inflight:
            await self.settle_oldest()

    async def settle_landed(self) -> None:
        """On stop or crash: release the writes that landed, leave the rest for replay."""
        while self._inflight and landed(self._inflight[0][0]):
            await self.settle_oldest()
