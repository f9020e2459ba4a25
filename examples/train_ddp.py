"""Train a small model with plain PyTorch (DDP under torchrun) and report every step to trainguard.

    torchrun --nproc-per-node 2 examples/train_ddp.py --steps 200

The three trainguard lines are marked ``# trainguard``. Each rank reports to the node
agent listening on ``$TRAINGUARD_STEPS_SOCKET`` (default ``/run/trainguard/steps.sock``);
the job id, rank and world size come from torchrun (``TRAINGUARD_JOB_ID`` overrides the
job id). Without the agent running, reports are dropped and counted; training goes on.
Runs on the CPU (gloo) or on GPUs (nccl).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from trainguard.agents.trainer import TrainGuard  # trainguard


def main() -> None:
    """Train for --steps steps, reporting each one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else \
        torch.device("cpu")

    # A synthetic regression problem, the same on every rank (fixed seed).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8192, 64, generator=gen)
    y = x @ torch.randn(64, 1, generator=gen) + 0.1 * torch.randn(8192, 1, generator=gen)
    dataset = TensorDataset(x, y)
    sampler = DistributedSampler(dataset, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 1)).to(device)
    model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    guard = TrainGuard.attach(model, optimizer, sampler=sampler)  # trainguard
    step, epoch = 0, 0
    while step < args.steps:
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            loss = F.mse_loss(model(xb.to(device)), yb.to(device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            guard.step(loss)  # trainguard: after optimizer.step()
            step += 1
            if step >= args.steps:
                break
        epoch += 1
    guard.close()  # trainguard: says "bye" (finished)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
