"""A bounded on-disk FIFO between the agent's tick loop and Kafka.

Every record the agent produces is appended here first and sent from here, so a broker
outage or an agent restart loses nothing: the sender replays from the committed
cursor, in order. Records live in segment files of framed entries
(``length, crc32, seq, appended_at`` + payload); the cursor (the first sequence number
not yet acknowledged by Kafka) is persisted atomically. When the spool exceeds
``max_bytes``, whole segments are deleted oldest first and the unsent records in them
are counted in :attr:`Spool.dropped` (reported in heartbeats), never silently lost.
A torn write at the tail (crash mid-append) is truncated away on open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trainguard.errors import TrainguardError

__all__ = ["Spool", "SpoolEntry"]

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes must be >= 4096, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        # Keep at least a few segments within the bound so dropping one frees a fraction only.
        self.segment_bytes = max(1024, min(segment_bytes, max_bytes // 4))
        self._clock = clock
        self._lock = threading.Condition()
        self.dropped = 0
        self.corrupt = 0
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
            self._roll()

    # -- writing ---------------------------------------------------------------------

    def append(self, topic: str, key: bytes, value: bytes) -> int:
        """Append one message; return its sequence number. Never blocks on the network."""
        topic_b = topic.encode()
        payload = _TOPIC_KEY.pack(len(topic_b), len(key)) + topic_b + key + value
        with self._lock:
            if self._closed:
                raise TrainguardError(f"spool {str(self.directory)!r} is closed")
            seq = self._next_seq
            frame = _HEADER.pack(len(payload), zlib.crc32(payload), seq, self._clock()) + payload
            seg = self._segments[-1]
            if seg.size > 0 and seg.size + len(frame) > self.segment_bytes:
                self._roll()
                seg = self._segments[-1]
            assert self._writer is not None
            self._writer.write(frame)
            self._writer.flush()  # into the page cache: survives a process crash
            seg.size += len(frame)
            seg.last_seq = seq
            self._next_seq = seq + 1
            self._enforce_bound()
            self._lock.notify_all()
            return seq

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
    def size_bytes(self) -> int:
        """Bytes on disk across segments."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def close(self) -> None:
        """Close files and release the directory; the cursor is already persisted."""
        with self._lock:
            self._closed = True
            self._close_reader()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._lockfile is not None:
                self._lockfile.close()  # releases the flock
                self._lockfile = None

    # -- internals -------------------------------------------------------------------

    def _read_one(self) -> SpoolEntry | None:
        seg = next((s for s in self._segments if s.first_seq <= self._read_seq <= s.last_seq), None)
        if seg is None:
            return None
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

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
        first = self._next_seq
        path = self.directory / f"seg-{first:020d}.log"
        self._writer = open(path, "ab")  # noqa: SIM115 - the active segment stays open
        self._segments.append(_Segment(path, first, first - 1, path.stat().st_size))

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
        tmp.write_text(str(self._committed))
        os.replace(tmp, self._cursor_path)

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
            self._writer = open(self._segments[-1].path, "ab")  # noqa: SIM115


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
