"""Trainer kit fixtures: a temp socket directory, a raw receiver, a reporter to it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.trainer.wire import Receiver
from trainguard.agents.reporter import StepReporter


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tgk", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def receiver(sock_dir: Path) -> Iterator[Receiver]:
    r = Receiver(sock_dir / "steps.sock")
    yield r
    r.close()


@pytest.fixture
def reporter(receiver: Receiver) -> Iterator[StepReporter]:
    rep = StepReporter("job-k", 0, 1, socket_path=str(receiver.path), node="n1")
    yield rep
    rep.close()
