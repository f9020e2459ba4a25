"""The node's local dead-letter file: messages that can never leave the node, kept with a reason.

A message Kafka refuses for good (too large, an invalid record) or a step record too large
for any batch would otherwise be retried forever and block everything spooled behind it.
It is written here instead, one JSON line per message (time, reason, topic, key, size,
SHA-256 and the bytes, base64, cut at ``max_value_bytes``), and counted: the count rides in
every heartbeat (``dead_lettered``). The file is bounded: past ``max_bytes / 2`` it is
rotated to ``<name>.1`` (replacing the previous one), so at most ``max_bytes`` stay on disk.
Writing it never raises: a disk that is full loses the line, not the agent (counted in
:attr:`LocalDeadLetters.write_errors`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from trainguard.agents.ratelimit import LogLimiter

__all__ = ["LocalDeadLetters"]

log = logging.getLogger(__name__)


class _Line(msgspec.Struct, kw_only=True):
    """One dead letter as written to the file."""

    ts: float
    reason: str
    topic: str
    key: str
    size: int
    sha256: str
    value_b64: str
    truncated: bool
    detail: str


_encoder = msgspec.json.Encoder()


class LocalDeadLetters:
    """Appends refused messages to a bounded JSON-lines file; thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_value_bytes: int = 256 * 1024,
        clock: Callable[[], float] = time.time,
        log_interval_s: float = 10.0,
    ) -> None:
        # A line holds up to 4/3 x max_value_bytes (base64): one always fits in each half.
        if max_bytes < 4 * max_value_bytes:
            raise ValueError(
                f"dead-letter max_bytes {max_bytes} must be at least 4 x "
                f"max_value_bytes ({max_value_bytes})"
            )
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._limiter = LogLimiter(log_interval_s)
        #: Messages dead-lettered since start (written or not), by reason.
        self.count = 0
        self.by_reason: dict[str, int] = {}
        #: Dead letters that could not be written to the file (disk full, I/O error).
        self.write_errors = 0

    def add(self, topic: str, key: bytes, value: bytes, *, reason: str, detail: str = "") -> None:
        """Record one message that will not be sent, with a short snake_case ``reason``."""
        kept = value[: self.max_value_bytes]
        line = _encoder.encode(_Line(
            ts=self._clock(), reason=reason, topic=topic,
            key=key.decode("utf-8", errors="replace")[:256], size=len(value),
            sha256=hashlib.sha256(value).hexdigest(),
            value_b64=base64.b64encode(kept).decode(), truncated=len(kept) < len(value),
            detail=detail[:1000],
        )) + b"\n"
        with self._lock:
            self.count += 1
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            error = self._write(line)
        held = self._limiter.allow()
        if held is not None:
            log.error(
                "message dead-lettered on the node reason=%s topic=%s key=%s bytes=%d file=%s "
                "write_error=%s total=%d (%d more since last logged): %s",
                reason, topic, key.decode("utf-8", errors="replace")[:256], len(value), self.path,
                error, self.count, held, detail[:200],
            )

    def _write(self, line: bytes) -> str | None:
        """Append ``line``, rotating first when the file would pass half the bound."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes // 2:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "ab") as fh:
                fh.write(line)
        except OSError as exc:
            self.write_errors += 1
            return str(exc)
        return None
