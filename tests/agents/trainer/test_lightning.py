"""The Lightning callback on a tiny real Trainer run on the CPU, reporting to a real intake."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from trainguard.agents.intake import StepIntake  # noqa: E402
from trainguard.agents.reporter import StepReporter  # noqa: E402
from trainguard.agents.trainer.lightning import TrainGuardCallback  # noqa: E402


class Tiny(pl.LightningModule):
    """A 2-layer regressor that remembers the loss of every batch it trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


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


def test_one_report_per_optimizer_step_with_the_mean_loss_of_its_micro_batches(tmp_path, intake):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=gen)
    loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    reporter = StepReporter("pl-job", 0, 1, socket_path=str(intake.socket_path), node="n1")
    module = Tiny()
    trainer = pl.Trainer(max_steps=5, accumulate_grad_batches=2, accelerator="cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[TrainGuardCallback(reporter=reporter)])
    trainer.fit(module, loader)
    steps = sorted(_drain(intake, 5), key=lambda s: s.step)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5]
    assert len(module.losses) == 10  # two micro-batches per optimizer step
    for s in steps:
        assert s.job_id == "pl-job" and s.lr == pytest.approx(0.05)
        # The step's loss: the mean over its two micro-batches.
        mean = (module.losses[2 * s.step - 2] + module.losses[2 * s.step - 1]) / 2
        assert s.loss == pytest.approx(mean, rel=1e-5)
