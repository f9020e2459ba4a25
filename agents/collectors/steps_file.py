"""Step records from a JSON-lines log file, for trainers that only write logs.

Each line is one JSON object with :class:`~trainguard.schemas.records.StepRecord` fields; ``kind``
is optional, and ``job_id``/``rank``/``world_size``/``node`` missing from a line are
taken from the tail's defaults. A line without ``ts`` is stamped with the time it was
read (close to event time when the agent keeps up, wrong when replaying history).

Python's ``json`` module writes a NaN loss as ``NaN``, which is not JSON; such lines
are still read: the non-finite value becomes ``None`` and is counted in ``nonfinite``,
as the socket intake does.

A line that cannot be read for any reason (invalid UTF-8, nesting too deep, a wrong
type) costs that line only: it is counted by reason in ``malformed_by_reason`` and the
tail goes on with the next one.

:meth:`StepFileTail.poll` behaves like ``tail -F``: it reads complete lines only (a
partial last line waits for its newline), follows truncation and rotation (the rest of
the old file is read first, then the new one from its start), and tolerates a file
that does not exist yet.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgspec

from trainguard.agents.ratelimit import LogLimiter
from trainguard.errors import CollectorError
from trainguard.schemas.codec import RecordError, convert
from trainguard.schemas.records import SCHEMA_VERSION, STEP_FLOAT_FIELDS, StepRecord

__all__ = ["StepFileTail"]

log = logging.getLogger(__name__)

_FLOAT_FIELDS: Final = STEP_FLOAT_FIELDS
# How far back from the end to look for the last newline when starting at the end.
_TAIL_PROBE_BYTES: Final = 64 * 1024


class StepFileTail:
    """Follows one JSON-lines step log; each :meth:`poll` returns the new records."""

    def __init__(
        self,
        path: Path,
        *,
        job_id: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        node: str,
        from_start: bool = False,
        max_line_bytes: int = 1024 * 1024,
        max_bytes_per_poll: int = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes_per_poll <= max_line_bytes:
            raise ValueError(
                f"max_bytes_per_poll {max_bytes_per_poll} must exceed "
                f"max_line_bytes {max_line_bytes}"
            )
        self.path = Path(path)
        self._defaults: dict[str, Any] = {
            k: v
            for k, v in (("job_id", job_id), ("rank", rank), ("world_size", world_size))
            if v is not None
        }
        self._defaults["node"] = node
        self._max_line = max_line_bytes
        self._max_read = max_bytes_per_poll
        self._clock = clock
        self._file: BinaryIO | None = None
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._offset = 0
        # Inside a line longer than max_line_bytes: discard up to its newline.
        self._skipping = False
        self._limiter = LogLimiter()
        self.steps_received = 0
        self.steps_malformed = 0
        self.malformed_by_reason: dict[str, int] = {}
        self.nonfinite = 0
        #: Truncations and rotations followed.
        self.rotations = 0
        #: The most recent malformed line's reason and message, for diagnostics.
        self.last_error: str | None = None
        # A restarted agent must not re-send history: start after the last full line.
        if not from_start and self._open():
            self._seek_to_last_line()

    def poll(self) -> list[StepRecord]:
        """Read the complete lines appended since the last poll."""
        records: list[StepRecord] = []
        try:
            if self._file is None and not self._open():
                return records
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is None or (st.st_dev, st.st_ino) != self._id:
                # Rotated or removed: finish what the writer put in the old file first.
                self._read(records)
                self._close(partial_is_lost=True)
                if st is not None and self._open():
                    self.rotations += 1
            elif st.st_size < self._offset:
                self.rotations += 1  # truncated in place (copytruncate)
                self._offset = 0
                self._skipping = False
            if self._file is not None:
                self._read(records)
        except OSError as exc:
            raise CollectorError(f"cannot read step log {self.path}: {exc}") from exc
        return records

    def close(self) -> None:
        """Close the file."""
        self._close(partial_is_lost=False)

    def _open(self) -> bool:
        try:
            f = open(self.path, "rb")  # kept open across polls, to follow rotation
        except FileNotFoundError:
            return False
        st = os.fstat(f.fileno())
        self._file, self._id = f, (st.st_dev, st.st_ino)
        self._offset, self._skipping = 0, False
        return True

    def _close(self, *, partial_is_lost: bool) -> None:
        if self._file is None:
            return
        if partial_is_lost and not self._skipping:
            self._file.seek(self._offset)
            if self._file.read(1):
                self._count("not_json", "incomplete last line")
        self._file.close()
        self._file, self._id = None, None

    def _seek_to_last_line(self) -> None:
        assert self._file is not None
        size = os.fstat(self._file.fileno()).st_size
        start = max(0, size - _TAIL_PROBE_BYTES)
        self._file.seek(start)
        newline = self._file.read(size - start).rfind(b"\n")
        if newline >= 0:
            self._offset = start + newline + 1
        elif start > 0:
            self._offset, self._skipping = size, True  # inside a huge line
        # else: one partial line from the file's start; read it once it is complete

    def _read(self, out: list[StepRecord]) -> None:
        f = self._file
        assert f is not None
        f.seek(self._offset)
        data = f.read(self._max_read)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > self._max_line and not self._skipping:
                self._count("too_large", f"line longer than {self._max_line} bytes")
                self._skipping = True
            if self._skipping:
                self._offset += len(data)
            return
        self._offset += end + 1
        lines = data[:end].split(b"\n")
        if self._skipping:
            lines = lines[1:]  # the tail of the over-long line
            self._skipping = False
        for line in lines:
            line = line.strip()
            if not line:
                continue
            if len(line) > self._max_line:
                self._count("too_large", f"line longer than {self._max_line} bytes")
                continue
            try:
                out.append(self._decode(line))
            except RecordError as exc:
                self._count(exc.reason, exc.message)
                continue
            except UnicodeError as exc:  # invalid UTF-8 inside a JSON string
                self._count("not_json", str(exc))
                continue
            except Exception as exc:  # RecursionError on deep nesting, or a bug: this line only
                self._count("error", f"{type(exc).__name__}: {exc}")
                continue
            self.steps_received += 1

    def _decode(self, line: bytes) -> StepRecord:
        try:
            obj = msgspec.json.decode(line)
        except UnicodeError as exc:
            raise RecordError("not_json", f"invalid UTF-8: {exc}") from None
        except RecursionError:
            raise RecordError("invalid", "JSON nested too deep") from None
        except msgspec.DecodeError:
            try:
                obj = json.loads(line)  # accepts NaN/Infinity, as Python writes them
            except (ValueError, RecursionError) as exc:
                raise RecordError("not_json", str(exc)) from None
        if not isinstance(obj, dict):
            raise RecordError("invalid", f"expected a JSON object, got {type(obj).__name__}")
        kind = obj.setdefault("kind", "step")
        if kind != "step":
            raise RecordError("wrong_kind", f"kind {kind!r} is not a step record")
        for key, value in self._defaults.items():
            if obj.get(key) is None:
                obj[key] = value
        if obj.get("ts") is None:
            obj["ts"] = self._clock()
        version = obj.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise RecordError(
                "unsupported_version", f"schema_version {version} is newer than {SCHEMA_VERSION}"
            )
        bad = False
        nonfinite = []
        for name in _FLOAT_FIELDS:
            value = obj.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                obj[name], bad = None, True
                nonfinite.append(name)
        if nonfinite:
            obj["nonfinite"] = nonfinite
        # Only the step socket's kernel credentials say who sent a step: a log line's word
        # for its pid and uid is none.
        obj.pop("pid", None)
        obj.pop("uid", None)
        try:
            record = convert(obj, StepRecord)  # strict, names checked as the codec does
        except msgspec.ValidationError as exc:
            raise RecordError("invalid", str(exc)) from None
        if bad:
            self.nonfinite += 1
        return record

    def _count(self, reason: str, message: str) -> None:
        # Counted, and logged at most every 10 s: a broken trainer can write millions of them.
        self.last_error = f"{reason}: {message[:500]}"
        self.steps_malformed += 1
        self.malformed_by_reason[reason] = self.malformed_by_reason.get(reason, 0) + 1
        held = self._limiter.allow()
        if held is not None:
            log.warning("malformed step log line path=%s reason=%s (%d more since last "
                        "warning): %s", self.path, reason, held, message[:500])
