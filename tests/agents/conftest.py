"""Fixtures shared by the agent tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A step socket path in a fresh directory under /tmp.

    pytest's ``tmp_path`` can exceed the ~107-byte ``AF_UNIX`` path limit.
    """
    d = tempfile.mkdtemp(prefix="tg", dir="/tmp")
    yield Path(d) / "steps.sock"
    shutil.rmtree(d, ignore_errors=True)
