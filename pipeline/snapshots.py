"""Writing and restoring the detector-state snapshots from the Faust side.

:class:`StateSnapshots` owns the timing and the bookkeeping that
:mod:`trainguard.pipeline.state` leaves to its caller: which of the two slots each
partition's next snapshot goes to, how many chunks the slot held last time (so that a
smaller snapshot tombstones the rest), when the next snapshot is due, and what to drop
and load when the partition assignment changes.

:class:`StageStates` makes one :class:`PartitionedState` of several stages' (the
baselines' detectors and the consistency stage's jobs), so one snapshot per partition
carries both; a stage's blob that fails to load is counted and that stage starts the
partition fresh, never stopping the worker.

A stage may also offer ``export_later(part)``: it copies the partition's state at once and
returns a call that encodes the copies, which :meth:`StateSnapshots.start` runs on a thread
(the baselines pack and compress there, see :mod:`trainguard.pipeline.state_codec`) in a
round sent in the background: the batches go on once every partition's copies are taken.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, cast

import msgspec

from trainguard.pipeline.offsets import landed
from trainguard.pipeline.publish import SendTopic
from trainguard.pipeline.state import chunk_snapshot, partition_key

__all__ = ["PartitionedState", "StageStates", "StateSnapshots"]

log = logging.getLogger(__name__)


class PartitionedState(Protocol):
    """What is snapshotted: state kept per input partition (the stages, see StageStates)."""

    def partitions(self) -> set[str]:
        """The partition keys state is held for."""
        ...

    def export(self, part: str) -> bytes:
        """One partition's state as bytes."""
        ...

    def load(self, part: str, blob: bytes) -> int:
        """Restore one partition's state; return how many entities it held."""
        ...

    def drop(self, part: str) -> int:
        """Forget one partition's state; return how many entities it held."""
        ...


#: A :class:`StageStates` blob starts with this; one without it is a baseline-only
#: snapshot (a worker from before the consistency stage was snapshotted).
_STAGES = b"TGS\x01"


class StageStates:
    """Several stages' per-partition state as one :class:`PartitionedState`.

    ``baselines`` also reads a blob without the composite header (the old format).
    A stage whose part of a blob does not load (damaged, other format) is dropped for
    that partition and counted in :attr:`rejected`: it starts the partition fresh.
    """

    def __init__(self, **stages: PartitionedState | None) -> None:
        self._stages = {name: s for name, s in stages.items() if s is not None}
        #: Blobs (or a stage's part of one) that did not load, per stage.
        self.rejected = dict.fromkeys(self._stages, 0)

    def partitions(self) -> set[str]:
        """Partitions any of the stages holds state for."""
        return set().union(*(s.partitions() for s in self._stages.values()))

    def export(self, part: str) -> bytes:
        """Every stage's state of ``part``, in one blob."""
        return self.export_later(part)()

    def export_later(self, part: str) -> Callable[[], bytes]:
        """Copy every stage's state of ``part`` now; the call returned encodes it.

        The call may run on another thread: it only reads the copies.
        """
        later = {name: _export_later(s, part) for name, s in self._stages.items()}
        return functools.partial(_join, later)

    def load(self, part: str, blob: bytes) -> int:
        """Load each stage's part of ``blob``; return the entities restored in all."""
        if not blob.startswith(_STAGES):
            return self._load("baselines", part, blob)
        try:
            blobs = msgspec.msgpack.decode(blob[len(_STAGES):], type=dict[str, bytes])
        except msgspec.DecodeError as exc:
            for name in self._stages:
                self._refused(name, part, exc)
            return 0
        return sum(self._load(name, part, b) for name, b in blobs.items())

    def drop(self, part: str) -> int:
        """Forget ``part`` in every stage; return the entities dropped in all."""
        return sum(s.drop(part) for s in self._stages.values())

    def _load(self, name: str, part: str, blob: bytes) -> int:
        stage = self._stages.get(name)
        if stage is None:
            return 0  # a stage this worker does not run
        try:
            return stage.load(part, blob)
        except Exception as exc:  # a damaged snapshot costs its state, never the worker
            stage.drop(part)
            self._refused(name, part, exc)
            return 0

    def _refused(self, name: str, part: str, exc: Exception) -> None:
        self.rejected[name] += 1
        log.warning("state snapshot not loaded stage=%s partition=%s error=%s: %s; it "
                    "starts fresh (rejected=%d)", name, part, type(exc).__name__, exc,
                    self.rejected[name])


def _export_later(state: PartitionedState, part: str) -> Callable[[], bytes]:
    """``state.export_later(part)`` where the state has it, else its blob exported now."""
    later = getattr(state, "export_later", None)
    if later is not None:
        return cast(Callable[[], bytes], later(part))
    blob = state.export(part)
    return lambda: blob


def _packs_later(state: PartitionedState) -> bool:
    """Whether ``state``'s export leaves work (packing) worth a thread."""
    return getattr(state, "export_later", None) is not None


def _join(later: dict[str, Callable[[], bytes]]) -> bytes:
    return _STAGES + msgspec.msgpack.encode({name: f() for name, f in later.items()})


class StateSnapshots:
    """Snapshots of per-partition state to a compacted topic, and their restore.

    ``read(keys)`` returns the latest snapshot blob of each partition key (blocking: it
    runs on a thread). ``clock`` is monotonic seconds, ``generation`` a rising integer.
    A round of snapshots that took t seconds delays the next by ``t / max_share`` (and at
    least ``every_s``).
    """

    def __init__(
        self, state: PartitionedState, topic: SendTopic, *, inputs: Iterable[str],
        every_s: float, read: Callable[[set[str]], dict[str, bytes]],
        clock: Callable[[], float] = time.monotonic, generation: Callable[[], int] = time.time_ns,
        max_share: float = 0.1,
    ) -> None:
        self._state, self._topic, self._read = state, topic, read
        self._max_share = max_share
        self._inputs = set(inputs)
        self._every_s, self._clock, self._generation = every_s, clock, generation
        self._next = clock() + every_s
        # The slot each partition's last snapshot went to, and the chunks per (partition, slot).
        self._slots: dict[str, int] = {}
        self._chunks: dict[tuple[str, int], int] = {}
        # Cleared while a new assignment's state loads: Faust may hand the agent events of
        # the new partitions before the handler finishes, and a cold baseline would judge them.
        self._ready = asyncio.Event()
        self._ready.set()
        #: The round being packed and sent (:meth:`start`), until :meth:`settle` takes it.
        self._round: asyncio.Future[int] | None = None
        #: Rounds sent whole; failed (logged as they fail, raised by the next
        #: :meth:`start`); abandoned because a store write they followed failed. A failover
        #: restores the last round sent whole, so SREs watch these (``health``).
        self.rounds_sent = self.rounds_failed = self.rounds_abandoned = 0
        #: Seconds the last round sent took (its copies, packing and sending).
        self.last_round_s = 0.0

    async def wait_ready(self) -> None:
        """Return once no assignment's state is loading."""
        await self._ready.wait()

    def due(self) -> bool:
        """Whether the next snapshot is due (never while a round is still being sent)."""
        return (self._round is None or self._round.done()) and self._clock() >= self._next

    async def write(self) -> int:
        """Write one snapshot of every partition held; return how many messages it took."""
        await self.start()
        return await self.settle()

    async def start(self, after: Sequence[asyncio.Future[Any]] = ()) -> None:
        """Copy every partition's state now; pack and send the copies in the background.

        ``after``: the store writes in flight, whose batches the state already holds. The
        round is sent only once they all landed, and abandoned if one did not: a snapshot
        must never hold an alarm whose anomaly is not stored, nor points of a batch that a
        crash would replay. The copies are taken before this returns, so batches may move
        the state on while the round waits, is packed and is sent; :meth:`settle` waits for
        it (before a handover) and raises what it raised. A previous round's error is
        raised here.
        """
        await self.settle()
        started = self._clock()
        generation = self._generation()
        # Every partition's copies at once, on the loop, while no batch moves the state:
        # the handler goes on once they are taken instead of for the whole round (at 3,500
        # nodes the round held consumption for 2-3 s). They are held until packed: about
        # the state's size in memory for the round's duration.
        copies = [(part, _export_later(self._state, part))
                  for part in sorted(self._state.partitions())]
        self._round = asyncio.ensure_future(
            self._send(copies, generation, self._clock() - started, list(after)))
        self._round.add_done_callback(self._ended)

    def _ended(self, round_: asyncio.Future[int]) -> None:
        """A round's failure is logged and counted when it happens, not a round later."""
        if round_.cancelled():
            return
        exc = round_.exception()
        if exc is not None:
            self.rounds_failed += 1
            log.error("state snapshot round failed error=%r failed=%d; the partitions' "
                      "previous snapshots stay", exc, self.rounds_failed)

    def health(self) -> dict[str, float]:
        """The rounds' figures for the worker's health probe (``state_snapshot_*``)."""
        return {"state_snapshot_rounds": float(self.rounds_sent),
                "state_snapshot_rounds_failed": float(self.rounds_failed),
                "state_snapshot_rounds_abandoned": float(self.rounds_abandoned),
                "state_snapshot_last_round_s": self.last_round_s}

    async def settle(self) -> int:
        """Wait for the round in flight (if any); return how many messages it took."""
        round_, self._round = self._round, None
        return 0 if round_ is None else await round_

    async def _settle_logged(self) -> None:
        """Wait for the round in flight; a rebalance goes on whatever it raised (logged)."""
        try:
            await self.settle()
        except Exception:  # logged and counted as it failed; the previous slot stays whole
            pass

    def cancel(self) -> None:
        """Stopping: abandon the round in flight (the previous snapshot's slot stays whole)."""
        round_, self._round = self._round, None
        if round_ is not None:
            round_.cancel()

    async def _send(self, copies: list[tuple[str, Callable[[], bytes]]], generation: int,
                    copied_s: float, after: list[asyncio.Future[Any]]) -> int:
        if after:
            await asyncio.wait(after)
            if not all(map(landed, after)):
                # The handler stops on the failed write; the previous snapshot stays.
                self.rounds_abandoned += 1
                log.warning("state snapshot round abandoned: a store write it followed failed")
                return 0
        loop = asyncio.get_running_loop()
        started = self._clock()  # the wait for the writes is theirs, not the round's
        sent = []
        copies.reverse()
        while copies:
            # Packed on a thread (zstd and zlib release the GIL) while the loop serves the
            # batches, the Kafka acks and the timers; each partition's copies go once packed.
            part, later = copies.pop()
            if part not in self._state.partitions():
                continue  # handed off by a rebalance: its new owner snapshots it now
            blob = (await loop.run_in_executor(None, later) if _packs_later(self._state)
                    else later())
            del later
            if part not in self._state.partitions():
                continue  # handed off while it was packed
            # Alternate slots: the previous snapshot stays whole while this one is written.
            slot = self._slots[part] = (self._slots.get(part, 1) + 1) % 2
            chunks = chunk_snapshot(part, blob, generation, slot,
                                    self._chunks.get((part, slot), 0))
            self._chunks[part, slot] = sum(1 for _, v in chunks if v is not None)
            sent += [await self._topic.send(key=k, value=v) for k, v in chunks]
        await asyncio.gather(*sent)
        # A large state (60 MB per partition at 10,000 nodes) takes seconds to export:
        # space snapshots so that they cost at most max_share of the worker.
        took = copied_s + self._clock() - started
        self._next = self._clock() + max(self._every_s, took / self._max_share)
        self.rounds_sent += 1
        self.last_round_s = took
        log.debug("state snapshot partitions=%d chunks=%d took_s=%.2f copied_s=%.2f",
                  len(self._slots), len(sent), took, copied_s)
        return len(sent)

    async def on_assigned(self, assigned: Iterable[Any]) -> None:
        """Drop the state of partitions gone elsewhere, load the newly assigned ones.

        Faust revokes everything before each rebalance (eager protocol), then hands out the
        full new assignment: comparing with what is held, instead of dropping on revoke,
        keeps the live state of partitions that stay with this worker.
        """
        self._ready.clear()
        try:
            await self._settle_logged()  # a round of the old assignment goes out first
            await self._move(assigned)
        finally:
            self._ready.set()

    async def _move(self, assigned: Iterable[Any]) -> None:
        owned = {partition_key(tp.topic, tp.partition) for tp in assigned
                 if tp.topic in self._inputs}
        for key in self._state.partitions() - owned:
            n = self._state.drop(key)
            # "baseline state": the text operators and tests know; it counts every stage's.
            log.info("baseline state handed off partition=%s entities=%d", key, n)
        missing = owned - self._state.partitions()
        blobs = {}
        if missing:
            blobs = await asyncio.get_running_loop().run_in_executor(None, self._read, missing)
        for key, blob in blobs.items():
            n = self._state.load(key, blob)
            log.info("baseline state restored partition=%s entities=%d", key, n)
        log.info("state assigned partitions=%d restored=%d keys=%s", len(owned), len(blobs),
                 ",".join(sorted(owned)))
