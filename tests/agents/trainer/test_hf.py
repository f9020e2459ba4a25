"""The HuggingFace callback on a tiny real Trainer run on the CPU, reporting to a real intake."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' Trainer needs it (`make install-torch`)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from torch import nn  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from trainguard.agents.intake import StepIntake  # noqa: E402
from trainguard.agents.reporter import StepReporter  # noqa: E402
from trainguard.agents.trainer.hf import TrainGuardCallback, checkpoint_digest  # noqa: E402


class Tiny(nn.Module):
    """A 2-layer regressor returning its loss the way HuggingFace models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": F.mse_loss(out, labels) if labels is not None else None, "logits": out}


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=gen)
        self.y = self.x.sum(dim=1, keepdim=True)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


@pytest.fixture
def intake():
    folder = tempfile.mkdtemp(prefix="tg", dir="/tmp")  # AF_UNIX paths are short
    with StepIntake(Path(folder) / "steps.sock") as it:
        yield it
    shutil.rmtree(folder, ignore_errors=True)


def _drain(intake, count, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += intake.drain()
        time.sleep(0.02)
    return got


def _drain_checkpoints(intake, count, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += intake.drain_checkpoints()
        time.sleep(0.02)
    return got


def _trainer(tmp_path, callback, max_steps):
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=max_steps, per_device_train_batch_size=8,
        learning_rate=0.05, lr_scheduler_type="linear", logging_steps=1, save_steps=3,
        save_strategy="steps", report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    torch.manual_seed(0)
    return Trainer(model=Tiny(), args=args, train_dataset=Data(), callbacks=[callback])


def test_every_optimizer_step_is_reported_with_the_trainers_loss_and_lr(tmp_path, intake):
    reporter = StepReporter("hf-job", 0, 1, socket_path=str(intake.socket_path), node="n1")
    trainer = _trainer(tmp_path, TrainGuardCallback(reporter=reporter), max_steps=6)
    trainer.train()
    steps = sorted(_drain(intake, 6), key=lambda s: s.step)
    logged = {e["step"]: e for e in trainer.state.log_history if "loss" in e}
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    for s in steps:
        assert s.job_id == "hf-job" and s.rank == 0 and s.node == "n1"
        assert s.loss == pytest.approx(logged[s.step]["loss"], abs=1e-4)  # HF rounds to 4
        assert s.lr == pytest.approx(logged[s.step]["learning_rate"], rel=1e-6)


def test_saves_and_the_resume_report_the_checkpoints_digest(tmp_path, intake):
    reporter = StepReporter("hf-ckpt", 0, 1, socket_path=str(intake.socket_path), node="n1")
    _trainer(tmp_path, TrainGuardCallback(reporter=reporter), max_steps=6).train()
    folder = tmp_path / "out" / "checkpoint-3"
    saved = {c.checkpoint_id: c for c in _drain_checkpoints(intake, 2) if c.action == "save"}
    assert set(saved) == {"checkpoint-3", "checkpoint-6"}
    assert saved["checkpoint-3"].digest == checkpoint_digest(folder)
    assert saved["checkpoint-3"].step == 3

    resumed = StepReporter("hf-ckpt", 0, 1, socket_path=str(intake.socket_path), node="n1")
    intake.drain()
    trainer = _trainer(tmp_path, TrainGuardCallback(reporter=resumed), max_steps=6)
    trainer.train(resume_from_checkpoint=str(folder))
    loads = [c for c in _drain_checkpoints(intake, 2) if c.action == "load"]
    assert [(c.checkpoint_id, c.digest) for c in loads] == [
        ("checkpoint-3", saved["checkpoint-3"].digest)]
    assert [s.step for s in sorted(_drain(intake, 3), key=lambda s: s.step)] == [4, 5, 6]
