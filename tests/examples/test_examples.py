"""examples/: the plain training loop runs (one process, gloo) and reports every step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from trainguard.agents.intake import StepIntake
from trainguard.local.broker import free_port

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]


def test_train_ddp_reports_every_step_to_the_agent_socket():
    folder = tempfile.mkdtemp(prefix="tg", dir="/tmp")  # AF_UNIX paths are short
    try:
        with StepIntake(Path(folder) / "steps.sock") as intake:
            env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": "0", "WORLD_SIZE": "1",
                   "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                   "TRAINGUARD_JOB_ID": "example", "TRAINGUARD_NODE": "n1",
                   "TRAINGUARD_STEPS_SOCKET": str(intake.socket_path), "OMP_NUM_THREADS": "1"}
            done = subprocess.run([sys.executable, str(REPO / "examples" / "train_ddp.py"),
                                   "--steps", "5", "--batch-size", "32"], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-3000:]
            steps = []
            deadline = time.monotonic() + 5
            while len(steps) < 5 and time.monotonic() < deadline:
                steps += intake.drain()
                time.sleep(0.02)
        assert len(steps) == 5
        numbers = sorted(s.step for s in steps)
        assert numbers == list(range(numbers[0], numbers[0] + 5))
        assert all(s.job_id == "example" and s.rank == 0 and s.world_size == 1 and
                   s.loss is not None and s.lr == pytest.approx(1e-3) for s in steps)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
