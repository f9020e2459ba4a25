"""The PyTorch trainer kit: three lines make a training job report to trainguard.

    from trainguard.agents.trainer import TrainGuard
    guard = TrainGuard.attach(model, optimizer)   # reporter = StepReporter.from_env()
    for batch in loader:
        loss = compute(batch); loss.backward(); optimizer.step(); optimizer.zero_grad()
        guard.step(loss)                           # after optimizer.step()
    guard.close()                                  # says bye "finished"

Installed with the ``torch`` extra. Importing this package does not import torch (the
node agent and the step reporter never do): the names below load their module on first
use. The modules, one job each:

- :mod:`.checksum`: exact 64-bit parameter digest computed on the device;
- :mod:`.cadence`: which steps get a digest (``"auto"``: chosen from its measured cost);
- :mod:`.grads`: DDP comm hook (local and global grad norm, collective timestamps) and
  the ``waiting`` watchdog;
- :mod:`.layout`: the parallel layout (DDP, FSDP, FSDP2/DeviceMesh) → shard coordinates;
- :mod:`.fingerprints`: seed fingerprint, data epoch, code/env manifest;
- :mod:`.checkpoint`: ``torch.save``/``torch.load`` and DCP with digests of the bytes;
- :mod:`.readback`: device values copied to the host without a per-step sync;
- :mod:`.sender`: step records sent to the agent off the training thread;
- :mod:`.guard`: :class:`TrainGuard`, which ties them to a
  :class:`~trainguard.agents.reporter.StepReporter`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainguard.agents.trainer.checksum import ParamChecksum
    from trainguard.agents.trainer.guard import TrainGuard
    from trainguard.agents.trainer.layout import Layout

__all__ = ["Layout", "ParamChecksum", "TrainGuard"]

_HOMES = {
    "Layout": "trainguard.agents.trainer.layout",
    "ParamChecksum": "trainguard.agents.trainer.checksum",
    "TrainGuard": "trainguard.agents.trainer.guard",
}


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (so ``import`` alone never loads torch)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
