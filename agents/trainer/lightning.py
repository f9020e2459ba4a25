"""Lightning integration: a ``Callback`` over the trainer kit.

    from trainguard.agents.trainer.lightning import TrainGuardCallback
    trainer = lightning.Trainer(callbacks=[TrainGuardCallback()], ...)

``on_train_start`` attaches :class:`~trainguard.agents.trainer.TrainGuard` to the trainer's
model (as the strategy wrapped it: DDP, FSDP) and first optimizer, its step index set to
the resumed ``global_step``; ``on_train_batch_end`` reports each optimizer step (once per
``global_step``, so gradient accumulation reports one step per optimizer update) with the
step's loss: the mean over its micro-batches (Lightning hands each micro-batch's loss
divided by ``accumulate_grad_batches``; their sum is that mean); ``on_train_end`` says
``bye``. Subclasses ``lightning.pytorch.Callback`` (the ``lightning`` package; a
``pytorch_lightning.Trainer`` wants its own package's callbacks). Imported only by users
of Lightning: the kit never imports it.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard

__all__ = ["TrainGuardCallback"]


def _loss_of(outputs: Any) -> Any:
    """The loss ``training_step`` returned (a tensor, or a dict with ``loss``), or None."""
    if isinstance(outputs, dict):
        return outputs.get("loss")
    return outputs


class TrainGuardCallback(Callback):
    """Reports every optimizer step of a Lightning ``Trainer`` through the trainer kit.

    ``reporter``: defaults to :meth:`StepReporter.from_env` (torchrun, SLURM or MPI);
    ``attach_options``: passed to :meth:`TrainGuard.attach` (``checksum_every``,
    ``code_roots``, ``layout``...).
    """

    def __init__(self, *, reporter: StepReporter | None = None, **attach_options: Any) -> None:
        super().__init__()
        self.reporter = reporter
        self.attach_options = attach_options
        self.guard: TrainGuard | None = None
        self._last_step = -1
        self._loss: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Attach the kit to the (wrapped) model and the first optimizer."""
        if self.guard is not None:
            self.guard.close()
        if self.reporter is None:
            self.reporter = StepReporter.from_env()
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        model = trainer.model if trainer.model is not None else pl_module
        self._last_step, self._loss = trainer.global_step, None
        self.guard = TrainGuard.attach(model, optimizer, reporter=self.reporter,
                                       start_step=trainer.global_step, **self.attach_options)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Report the optimizer step this batch completed (if it completed one)."""
        if self.guard is None:
            return
        loss = _loss_of(outputs)
        if loss is not None:
            loss = loss.detach() if hasattr(loss, "detach") else loss
            self._loss = loss if self._loss is None else self._loss + loss
        if trainer.global_step == self._last_step:
            return  # a micro-batch of a step still accumulating
        self._last_step = trainer.global_step
        loss, self._loss = self._loss, None
        self.guard.step(loss, step=trainer.global_step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Training finished: ``bye`` (finished)."""
        if self.guard is not None:
            self.guard.close()
            self.guard = None
