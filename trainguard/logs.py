"""Logging set-up for entry points only: key=value text or one JSON object per line.

Library modules just do ``log = logging.getLogger(__name__)`` and pass context as
``extra={"kv": {...}}`` or inline ``key=value`` in the message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

__all__ = ["configure_logging"]

_NOISY = ("kafka", "aiokafka", "faust", "mode", "urllib3", "clickhouse_connect")


class _KeyValueFormatter(logging.Formatter):
    """``2026-11-24T12:00:00Z level=INFO logger=x msg="..." key=value``."""

    converter = time.gmtime  # type: ignore[assignment]  # UTC timestamps in log lines

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ")
        line = f'{ts} level={record.levelname} logger={record.name} msg="{record.getMessage()}"'
        kv = getattr(record, "kv", None)
        if isinstance(kv, dict):
            line += "".join(f" {k}={v}" for k, v in kv.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        kv = getattr(record, "kv", None)
        if isinstance(kv, dict):
            doc.update(kv)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    level: str = "INFO", fmt: Literal["text", "json"] = "text", *, quiet_libraries: bool = True
) -> None:
    """Configure the root logger once, at an entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if quiet_libraries:
        for name in _NOISY:
            logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
