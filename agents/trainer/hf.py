"""HuggingFace ``transformers`` integration: a ``TrainerCallback`` over the trainer kit.

    from trainguard.agents.trainer.hf import TrainGuardCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[TrainGuardCallback()])

``on_train_begin`` attaches :class:`~trainguard.agents.trainer.TrainGuard` to the trainer's
model and optimizer (its step index set to the resumed ``global_step``); ``on_step_end``
reports the optimizer step with its loss; ``on_save`` reports the digest of the checkpoint
the trainer just wrote (and ``on_train_begin`` that of the checkpoint it resumed from), so
a checkpoint modified on disk between save and load is a ``checkpoint_digest`` finding;
``on_train_end`` says ``bye``.

The loss: the Trainer hands callbacks no loss, and logs one only every ``logging_steps``,
after ``on_step_end``. The callback therefore reads it where the model returns it (a
forward hook picks up ``outputs.loss`` / ``outputs["loss"]`` / ``outputs[0]`` in training
mode, averaged over the micro-batches of the step, left on the device); a model whose loss
is computed outside its forward (``compute_loss_func``, label smoothing) falls back to the
last logged loss. Imported only by users of ``transformers``: the kit never imports it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard

__all__ = ["CHECKPOINT_FILES", "TrainGuardCallback", "checkpoint_digest"]

log = logging.getLogger(__name__)

#: Files of a Trainer checkpoint whose bytes define the run's state (weights, optimizer,
#: scheduler); the digest covers them, in name order.
CHECKPOINT_FILES = ("model*.safetensors", "pytorch_model*.bin", "adapter_model*",
                    "optimizer.pt", "scheduler.pt")
_CHUNK = 1 << 20


def checkpoint_digest(folder: Path) -> str | None:
    """SHA-256 over the names and SHA-256s of a checkpoint folder's state files (None: none)."""
    files = sorted({p for pattern in CHECKPOINT_FILES for p in folder.glob(pattern)
                    if p.is_file()})
    if not files:
        return None
    outer = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                inner.update(chunk)
        outer.update(f"{path.name}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def _loss_of(output: Any) -> Any:
    """The loss a HuggingFace model returned (ModelOutput, dict or tuple), or None."""
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if loss is None and isinstance(output, tuple | list) and output:
        first = output[0]
        loss = first if getattr(first, "ndim", None) == 0 else None
    return loss


class TrainGuardCallback(TrainerCallback):
    """Reports every optimizer step of a HuggingFace ``Trainer`` through the trainer kit.

    ``reporter``: defaults to :meth:`StepReporter.from_env` (torchrun, SLURM or MPI);
    ``checkpoint_digests``: hash the checkpoint files at save and resume (reads them once
    more; turn off for checkpoints too large to re-read); ``attach_options``: passed to
    :meth:`TrainGuard.attach` (``checksum_every``, ``code_roots``, ``layout``...).
    """

    def __init__(self, *, reporter: StepReporter | None = None, checkpoint_digests: bool = True,
                 **attach_options: Any) -> None:
        self.reporter = reporter
        self.checkpoint_digests = checkpoint_digests
        self.attach_options = attach_options
        self.guard: TrainGuard | None = None
        self._losses: list[Any] = []
        self._hook: Any = None

    # -- lifecycle ------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        """Attach the kit to the trainer's model and optimizer."""
        if self.guard is not None:  # train() called again: a new run of the same trainer
            self._detach()
        if self.reporter is None:
            self.reporter = StepReporter.from_env()
        self.guard = TrainGuard.attach(model, optimizer, reporter=self.reporter,
                                       start_step=state.global_step, **self.attach_options)
        if model is not None:
            self._hook = model.register_forward_hook(self._on_forward)
        if state.global_step > 0 and state.is_world_process_zero:
            self._report_checkpoint("load", args, state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:
        """One optimizer step done: report it with its loss."""
        if self.guard is None:
            return
        loss = self._step_loss(state)
        self.guard.step(loss, step=state.global_step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        """The trainer wrote ``checkpoint-<step>``: report its digest (process zero wrote it)."""
        if state.is_world_process_zero:
            self._report_checkpoint("save", args, state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        """Training finished: ``bye`` (finished)."""
        self._detach()

    # -- helpers --------------------------------------------------------------------------
    def _on_forward(self, module: Any, inputs: Any, output: Any) -> None:
        if not module.training:
            return
        loss = _loss_of(output)
        if loss is not None:
            self._losses.append(loss.detach() if hasattr(loss, "detach") else loss)

    def _step_loss(self, state: TrainerState) -> Any:
        losses, self._losses = self._losses, []
        if losses:
            return sum(losses[1:], losses[0]) / len(losses)
        for entry in reversed(state.log_history):
            if "loss" in entry:
                return entry["loss"]
        return None

    def _report_checkpoint(self, action: str, args: TrainingArguments,
                           state: TrainerState) -> None:
        if not self.checkpoint_digests or self.reporter is None or args.output_dir is None:
            return
        checkpoint_id = f"checkpoint-{state.global_step}"
        folder = Path(args.output_dir) / checkpoint_id
        try:
            digest = checkpoint_digest(folder)
        except OSError as exc:
            log.warning("cannot hash checkpoint folder=%s error=%s", folder, exc)
            return
        if digest is not None:
            self.reporter.checkpoint(action, checkpoint_id, digest,  # type: ignore[arg-type]
                                     step=state.global_step)

    def _detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        self._losses = []
