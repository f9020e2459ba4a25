"""A bounded on-disk FIFO between the agent's tick loop and Kafka.

Every record the agent produces is appended here first and sent from here, so a broker
outage or an agent restart loses nothing: the sender replays from the committed
cursor, in order. Records live in segment files of framed entries
(``length, crc32, seq, appended_at`` + payload); the cursor (the first sequence number
not yet acknowledged by Kafka) is persisted atomically. When the spool exceeds
``max_bytes``, whole segments are deleted oldest first and the unsent records in them
are counted in :attr:`Spool.dropped` (reported in heartbeats), never silently lost.
A torn write at the tail (crash mid-append) is truncated away on open.

A write that fails (disk full, I/O error) does not stop the agent: the record is kept in
a bounded memory queue that the sender reads like the disk, the failure is counted in
:attr:`Spool.write_errors`, and the queue is written to a fresh segment as soon as a
retry succeeds (at most every ``retry_interval_s``). Only what is still in memory at a
restart is lost; the oldest records in memory beyond ``memory_max_bytes`` are dropped
and counted.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trainguard.agents.ratelimit import LogLimiter
from trainguard.errors import TrainguardError

__all__ = ["Spool", "SpoolEntry", "open_segment"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIqd")  # payload length, crc32(payload), seq, appended_at (epoch s)
_TOPIC_KEY = struct.Struct("<HI")  # topic length, key length


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled message."""

    seq: int
    topic: str
    key: bytes
    value: bytes
    appended_at: float


@dataclass(frozen=True)
class _Held:
    """A record kept in memory while the disk refuses writes, with its framed bytes."""

    entry: SpoolEntry
    frame: bytes


def open_segment(path: Path) -> BinaryIO:
    """Open a segment for appending, unbuffered: a failed write leaves nothing behind to flush."""
    return open(path, "ab", buffering=0)  # noqa: SIM115 - the active segment stays open


@dataclass
class _Segment:
    path: Path
    first_seq: int
    last_seq: int  # first_seq - 1 while empty
    size: int


class Spool:
    """Durable, bounded, single-reader FIFO of Kafka messages; thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        memory_max_bytes: int = 32 * 1024 * 1024,
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        opener: Callable[[Path], BinaryIO] = open_segment,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes must be >= 4096, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        # Keep at least a few segments within the bound so dropping one frees a fraction only.
        self.segment_bytes = max(1024, min(segment_bytes, max_bytes // 4))
        self.memory_max_bytes = memory_max_bytes
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._opener = opener
        self._lock = threading.Condition()
        self.dropped = 0
        self.corrupt = 0
        #: Failed writes to disk (segment or cursor); records are held in memory meanwhile.
        self.write_errors = 0
        # Records the disk refused, a contiguous run of the newest sequence numbers.
        self._memory: deque[_Held] = deque()
        self._memory_bytes = 0
        self._retry_at = 0.0
        self._limiter = LogLimiter()
        directory.mkdir(parents=True, exist_ok=True)
        # One agent per spool: two readers of one directory would send everything twice.
        self._lockfile: BinaryIO | None = open(directory / "lock", "wb")  # noqa: SIM115
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise TrainguardError(
                f"spool directory {str(directory)!r} is in use by another agent; "
                "give each agent its own spool directory"
            ) from None
        self._closed = False
        self._cursor_path = directory / "cursor"
        self._segments: list[_Segment] = []
        self._reader: tuple[int, BinaryIO] | None = None  # (segment first_seq, open file)
        self._writer: BinaryIO | None = None
        self._committed = self._load_cursor()
        self._recover()
        self._next_seq = self._segments[-1].last_seq + 1 if self._segments else self._committed
        self._committed = max(self._committed, self._segments[0].first_seq if self._segments else 0)
        self._read_seq = self._committed
        if not self._segments:
            self._roll(self._next_seq)

    # -- writing ---------------------------------------------------------------------

    def append(self, topic: str, key: bytes, value: bytes) -> int:
        """Append one message; return its sequence number. Never blocks on the network.

        A disk error is not raised: the record is held in memory (see the module notes).
        """
        topic_b = topic.encode()
        payload = _TOPIC_KEY.pack(len(topic_b), len(key)) + topic_b + key + value
        with self._lock:
            if self._closed:
                raise TrainguardError(f"spool {str(self.directory)!r} is closed")
            seq = self._next_seq
            appended_at = self._clock()
            frame = _HEADER.pack(len(payload), zlib.crc32(payload), seq, appended_at) + payload
            self._next_seq = seq + 1
            if self._memory and appended_at >= self._retry_at:
                self._write_held()
            if self._memory or not self._write(seq, frame):
                self._hold(_Held(SpoolEntry(seq, topic, key, value, appended_at), frame))
            self._enforce_bound()
            self._lock.notify_all()
            return seq

    def _write(self, seq: int, frame: bytes) -> bool:
        """Write one frame to the active segment (rolled when needed); False on a disk error."""
        seg = self._segments[-1] if self._segments else None
        try:
            if (
                seg is None
                or self._writer is None
                or (seg.size == 0 and seg.first_seq != seq)
                or (seg.size > 0 and seq != seg.last_seq + 1)
                or (seg.size > 0 and seg.size + len(frame) > self.segment_bytes)
            ):
                self._roll(seq)
                seg = self._segments[-1]
            assert self._writer is not None
            written = 0
            while written < len(frame):  # raw writes may be partial
                n = self._writer.write(frame[written:])
                if not n:
                    raise OSError(errno.EIO, f"short write to {seg.path}")
                written += n
        except OSError as exc:
            self._write_failed(seg, exc)
            return False
        seg.size += len(frame)
        seg.last_seq = seq
        return True

    def _write_failed(self, seg: _Segment | None, exc: OSError) -> None:
        self.write_errors += 1
        self._retry_at = self._clock() + self._retry_interval_s
        if self._writer is not None and seg is not None:
            try:
                self._writer.truncate(seg.size)  # cut a partial frame off the tail
            except OSError:
                # The tail may hold a torn frame: never append after it; start a new segment.
                self._close_writer()
        held = self._limiter.allow()
        if held is not None:
            log.error(
                "spool write failed; holding records in memory dir=%s error=%s "
                "write_errors=%d in_memory=%d (%d more since last logged)",
                self.directory, exc, self.write_errors, len(self._memory), held,
            )

    def _hold(self, held: _Held) -> None:
        """Keep a record in memory; past ``memory_max_bytes`` drop the oldest held, counted."""
        self._memory.append(held)
        self._memory_bytes += len(held.frame)
        while self._memory_bytes > self.memory_max_bytes and len(self._memory) > 1:
            old = self._memory.popleft()
            self._memory_bytes -= len(old.frame)
            if old.entry.seq >= self._read_seq:
                self.dropped += 1

    def _write_held(self) -> None:
        """Retry: move the records held in memory to disk, oldest first, until one fails."""
        while self._memory:
            held = self._memory[0]
            if not self._write(held.entry.seq, held.frame):
                return
            self._memory.popleft()
            self._memory_bytes -= len(held.frame)
        log.info("spool writes recovered; records held in memory are on disk dir=%s",
                 self.directory)

    # -- reading ---------------------------------------------------------------------

    def read(self, max_records: int, timeout: float = 0.0) -> list[SpoolEntry]:
        """Up to ``max_records`` entries after the last ones read; waits ``timeout`` for one."""
        with self._lock:
            if self._closed:
                return []
            if self._read_seq >= self._next_seq and timeout > 0:
                self._lock.wait(timeout)
            out: list[SpoolEntry] = []
            while len(out) < max_records and self._read_seq < self._next_seq:
                entry = self._read_one()
                if entry is None:
                    break
                out.append(entry)
            return out

    def commit(self, through_seq: int) -> None:
        """Mark every entry up to ``through_seq`` as delivered; persist the cursor."""
        with self._lock:
            if self._closed or through_seq + 1 <= self._committed:
                return
            self._committed = through_seq + 1
            self._write_cursor()
            while self._memory and self._memory[0].entry.seq < self._committed:
                self._memory_bytes -= len(self._memory.popleft().frame)
            while len(self._segments) > 1 and self._segments[0].last_seq < self._committed:
                self._delete_oldest(count_dropped=False)

    def rewind(self) -> None:
        """Forget what was read but not committed: the next read starts at the cursor."""
        with self._lock:
            self._close_reader()
            self._read_seq = self._committed

    @property
    def depth(self) -> int:
        """Entries appended but not yet committed (in flight included)."""
        with self._lock:
            return self._next_seq - self._committed

    @property
    def memory_depth(self) -> int:
        """Records held in memory because the disk refused them."""
        with self._lock:
            return len(self._memory)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk across segments."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def close(self) -> None:
        """Close files and release the directory; the cursor is already persisted."""
        with self._lock:
            self._closed = True
            self._close_reader()
            self._close_writer()
            if self._memory:
                lost = sum(1 for h in self._memory if h.entry.seq >= self._committed)
                self.dropped += lost
                log.error("spool closed with records only in memory (disk errors); lost=%d "
                          "dir=%s", lost, self.directory)
                self._memory.clear()
                self._memory_bytes = 0
            if self._lockfile is not None:
                self._lockfile.close()  # releases the flock
                self._lockfile = None

    # -- internals -------------------------------------------------------------------

    def _read_one(self) -> SpoolEntry | None:
        seg = self._segment_at(self._read_seq)
        if seg is None and not self._in_memory(self._read_seq):
            self._skip_gap()  # records dropped from memory: go on with the next one
            seg = self._segment_at(self._read_seq)
        if seg is None:
            if not self._in_memory(self._read_seq):
                return None
            entry = self._memory[self._read_seq - self._memory[0].entry.seq].entry
            self._read_seq += 1
            return entry
        if self._reader is None or self._reader[0] != seg.first_seq:
            self._close_reader()
            self._reader = (seg.first_seq, open(seg.path, "rb"))  # noqa: SIM115 - kept open
        fh = self._reader[1]
        while True:
            frame = _read_frame(fh)
            if frame is None:  # a frame damaged on disk after it was written: skip the segment
                lost = seg.last_seq + 1 - self._read_seq
                self.corrupt += 1
                self.dropped += lost
                log.error("spool segment unreadable; skipped path=%s records=%d", seg.path, lost)
                self._read_seq = seg.last_seq + 1
                return None
            seq, appended_at, payload = frame
            if seq < self._read_seq:
                continue  # skipping entries before the cursor after a restart or rewind
            self._read_seq = seq + 1
            tlen, klen = _TOPIC_KEY.unpack_from(payload)
            start = _TOPIC_KEY.size
            topic = payload[start : start + tlen].decode()
            key = payload[start + tlen : start + tlen + klen]
            value = payload[start + tlen + klen :]
            return SpoolEntry(seq, topic, key, value, appended_at)

    def _segment_at(self, seq: int) -> _Segment | None:
        return next((s for s in self._segments if s.first_seq <= seq <= s.last_seq), None)

    def _in_memory(self, seq: int) -> bool:
        return bool(self._memory) and self._memory[0].entry.seq <= seq <= self._memory[-1].entry.seq

    def _skip_gap(self) -> None:
        """Move the read position to the next record that still exists, if any."""
        later = [s.first_seq for s in self._segments if s.last_seq >= s.first_seq > self._read_seq]
        if self._memory and self._memory[0].entry.seq > self._read_seq:
            later.append(self._memory[0].entry.seq)
        if later:
            self._read_seq = min(later)

    def _roll(self, first: int) -> None:
        """Start a new segment whose first record will be ``first``."""
        self._close_writer()
        if self._segments and self._segments[-1].size == 0:
            empty = self._segments.pop()  # never written to: replace it
            if self._reader is not None and self._reader[0] == empty.first_seq:
                self._close_reader()
            empty.path.unlink(missing_ok=True)
        path = self.directory / f"seg-{first:020d}.log"
        writer = self._opener(path)
        try:
            size = path.stat().st_size
        except OSError:
            writer.close()
            raise
        self._writer = writer
        self._segments.append(_Segment(path, first, first - 1, size))

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:  # nothing is buffered: what was written stays written
                log.warning("spool segment close failed dir=%s error=%s", self.directory, exc)

    def _enforce_bound(self) -> None:
        while len(self._segments) > 1 and sum(s.size for s in self._segments) > self.max_bytes:
            self._delete_oldest(count_dropped=True)

    def _delete_oldest(self, *, count_dropped: bool) -> None:
        seg = self._segments.pop(0)
        if count_dropped:
            unsent = seg.last_seq + 1 - max(seg.first_seq, self._read_seq)
            if unsent > 0:
                self.dropped += unsent
                log.warning(
                    "spool full: dropped oldest records dropped=%d max_bytes=%d total_dropped=%d",
                    unsent, self.max_bytes, self.dropped,
                )
        if self._reader is not None and self._reader[0] == seg.first_seq:
            self._close_reader()
        self._read_seq = max(self._read_seq, seg.last_seq + 1)
        if self._committed <= seg.last_seq:
            self._committed = seg.last_seq + 1
            self._write_cursor()
        seg.path.unlink(missing_ok=True)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def _load_cursor(self) -> int:
        try:
            return int(self._cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            log.warning("spool cursor unreadable; replaying all path=%s", self._cursor_path)
            return 0

    def _write_cursor(self) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        try:
            tmp.write_text(str(self._committed))
            os.replace(tmp, self._cursor_path)
        except OSError as exc:
            # The cursor only saves re-sending after a restart; the next commit retries.
            self.write_errors += 1
            if self._limiter.allow() is not None:
                log.error("spool cursor not saved dir=%s error=%s", self.directory, exc)

    def _recover(self) -> None:
        """Index existing segments; cut a torn tail; drop segments wholly before the cursor."""
        for path in sorted(self.directory.glob("seg-*.log")):
            first = int(path.stem.split("-")[1])
            last, good = first - 1, 0
            with open(path, "rb") as fh:
                while (frame := _read_frame(fh)) is not None:
                    last, good = frame[0], fh.tell()
            size = path.stat().st_size
            if good < size:
                self.corrupt += 1
                log.warning("spool segment had a torn tail; truncated path=%s bytes=%d", path,
                            size - good)
                with open(path, "r+b") as fh:
                    fh.truncate(good)
            if last < self._committed and good > 0:
                path.unlink()
                continue
            self._segments.append(_Segment(path, first, last, good))
        if self._segments:
            # Append to the newest segment; reopen it for writing.
            self._writer = self._opener(self._segments[-1].path)


def _read_frame(fh: BinaryIO) -> tuple[int, float, bytes] | None:
    """Read one frame; None at end of file or at a torn/corrupt frame."""
    header = fh.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    length, crc, seq, appended_at = _HEADER.unpack(header)
    payload = fh.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return seq, appended_at, payload
