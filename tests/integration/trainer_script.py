"""A small real DDP training job for the trainer end-to-end tests; torchrun runs this file.

An MLP classifies a synthetic data set the test writes (``--data``, a ``.npz`` made with a
fixed seed), read through a ``DistributedSampler``; gloo on the CPU; trainguard's kit
attached the three-line way, checkpoints written and read through ``guard.save`` /
``guard.load`` (one file per rank). Each step sleeps ``--pad-s`` inside its compute, a
stand-in for the device time a GPU step spends in kernels, so that four ranks sharing two
CPU cores with the broker, the worker and the agents step at an even pace.

The run talks to the test through files in ``--run-dir``:

* ``ranks/rank<R>.json``: this rank's pid, node, local rank and world size (at start);
* ``progress/rank<R>``: the last step this rank finished;
* ``fault.json``: what this run's ``--fault`` did and when (``time.time()``);
* ``stop``: written by the test, holding a step number; every rank stops before it (ranks
  of a DDP job are within one step of each other, so the test writes a step a few ahead
  of the progress it saw and every rank reads it in time).

``--fault KIND:RANK[:STEP]`` sabotages rank ``RANK`` for real: ``weights`` (one weight
changed in memory right after the checkpoint load), ``seed`` (the data sampler seeded
differently after the restart), ``lr`` (the rank's optimizer lr x1.5 from STEP),
``grad`` (the rank's gradients x4 from STEP: its loss scaled before backward), ``slow``
(the rank's compute 25 % longer from STEP), ``tamper`` (one weight of the rank's copy
changed in memory at STEP).

``--hsdp R`` shards the model with FSDP2 over a ``(R, world / R)`` device mesh (HSDP: each
shard held by R replicas) instead of DDP; such runs take no checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from trainguard.agents.trainer import TrainGuard

FAULTS = ("weights", "seed", "lr", "grad", "slow", "tamper")
FEATURES, CLASSES, HIDDEN = 32, 4, 64


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    step: int

    @classmethod
    def parse(cls, text: str | None) -> Fault | None:
        if not text:
            return None
        kind, rank, *rest = text.split(":")
        if kind not in FAULTS:
            raise SystemExit(f"unknown fault {kind!r}; expected one of {FAULTS}")
        return cls(kind, int(rank), int(rest[0]) if rest else 0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--ckpt-dir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=400, help="upper bound on the last step")
    p.add_argument("--save-at", type=int, action="append", default=[],
                   help="save a checkpoint after this step (repeatable)")
    p.add_argument("--resume", type=int, default=None, help="load the checkpoint of this step")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", choices=("constant", "warmup-decay"), default="constant")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-batches", type=int, default=12)
    p.add_argument("--pad-s", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--fault", default=None)
    p.add_argument("--hsdp", type=int, default=0, help="replicas per shard (FSDP2), not DDP")
    return p.parse_args(argv)


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                         nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Job:
    """One rank of the job: model, data, optimizer, the kit, and the loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.fault = Fault.parse(args.fault)
        self.mine = self.fault is not None and self.fault.rank == self.rank
        self.run_dir: Path = args.run_dir
        self.step = 0
        _write(self.run_dir / "ranks" / f"rank{self.rank}.json", json.dumps({
            "rank": self.rank, "pid": os.getpid(), "world": self.world,
            "node": os.environ.get("TRAINGUARD_NODE", ""),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}))
        torch.manual_seed(args.seed)
        data = np.load(args.data)
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
        n_eval = len(x) // 5
        self.train_set = TensorDataset(x[n_eval:], y[n_eval:])
        self.eval_set = TensorDataset(x[:n_eval], y[:n_eval])
        seed = args.seed
        if self.mine and self.fault is not None and self.fault.kind == "seed":
            seed += 1
            self._record_fault()
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.world,
                                          rank=self.rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.loader = DataLoader(self.train_set, batch_size=args.batch, sampler=self.sampler,
                                 drop_last=True)
        self.steps_per_epoch = len(self.loader)
        self.net = build_model()
        if args.hsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (args.hsdp, self.world // args.hsdp),
                                    mesh_dim_names=("replicate", "shard"))
            self.model: nn.Module = fully_shard(self.net, mesh=mesh)
        else:
            self.model = DistributedDataParallel(self.net)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=0.9)
        self.sched = LambdaLR(self.opt, self._lr_factor)
        self.guard = TrainGuard.attach(self.model, self.opt, sampler=self.sampler)
        if args.resume is not None:
            self._load(args.resume)
        self.guard.step_index = self.step
        self.stop_at: int | None = None

    def _lr_factor(self, step: int) -> float:
        if self.args.schedule == "constant":
            return 1.0
        warm = self.args.warmup
        if step < warm:
            return (step + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / 200)))

    def _path(self, step: int) -> Path:
        return self.args.ckpt_dir / f"step{step}" / f"rank{self.rank}.pt"

    def _save(self) -> None:
        state = {"model": self.net.state_dict(), "opt": self.opt.state_dict(),
                 "sched": self.sched.state_dict(), "step": self.step}
        path = self._path(self.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.guard.save(state, path, checkpoint_id=f"step{self.step}")

    def _load(self, step: int) -> None:
        state = self.guard.load(self._path(step), checkpoint_id=f"step{step}",
                                map_location="cpu", weights_only=True)
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step = int(state["step"])
        if self.mine and self.fault is not None and self.fault.kind == "weights":
            # After the load and after DDP's broadcast at construction: nothing resyncs it.
            self._tamper()

    def _tamper(self) -> None:
        """Change one weight of this rank's copy (its local shard under FSDP)."""
        weight = next(self.net.parameters())
        local = weight.to_local() if hasattr(weight, "to_local") else weight
        with torch.no_grad():
            local[(0,) * local.dim()] += 1e-3
        self._record_fault()

    def _record_fault(self) -> None:
        assert self.fault is not None
        _write(self.run_dir / "fault.json", json.dumps({
            "kind": self.fault.kind, "rank": self.rank, "step": self.step,
            "ts": time.time()}))

    def _active(self, kind: str) -> bool:
        f = self.fault
        return self.mine and f is not None and f.kind == kind and self.step >= f.step

    def _check_stop(self) -> bool:
        if self.stop_at is None:
            stop = self.run_dir / "stop"
            if stop.exists():
                self.stop_at = int(stop.read_text())
        return self.step >= self.args.steps or (
            self.stop_at is not None and self.step >= self.stop_at)

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        start = time.perf_counter()
        if self._active("lr") and self.step == self.fault.step:  # type: ignore[union-attr]
            for group in self.opt.param_groups:
                group["lr"] *= 1.5
            self.sched.base_lrs = [lr * 1.5 for lr in self.sched.base_lrs]
            self._record_fault()
        if self._active("tamper") and self.step == self.fault.step:  # type: ignore[union-attr]
            self._tamper()
        loss = F.cross_entropy(self.model(xb), yb)
        time.sleep(self.args.pad_s)  # the step's device time
        if self._active("slow"):
            if self.step == self.fault.step:  # type: ignore[union-attr]
                self._record_fault()
            time.sleep(0.25 * (time.perf_counter() - start))
        scale = 1.0
        if self._active("grad"):
            if self.step == self.fault.step:  # type: ignore[union-attr]
                self._record_fault()
            scale = 4.0
        (loss * scale).backward()
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _evaluate(self) -> None:
        """An eval phase: no optimizer steps, every rank on its part of the eval set."""
        self.model.eval()
        sampler = DistributedSampler(self.eval_set, num_replicas=self.world, rank=self.rank,
                                     shuffle=False)
        total = torch.zeros(2)
        with torch.no_grad():
            loader = DataLoader(self.eval_set, batch_size=self.args.batch, sampler=sampler)
            for i, (xb, yb) in enumerate(loader):
                if i >= self.args.eval_batches:
                    break
                total[0] += F.cross_entropy(self.model(xb), yb, reduction="sum")
                total[1] += len(yb)
                time.sleep(self.args.pad_s)
        dist.all_reduce(total)
        self.model.train()

    def run(self) -> None:
        epoch = self.step // self.steps_per_epoch
        while not self._check_stop():
            self.sampler.set_epoch(epoch)
            skip = self.step - epoch * self.steps_per_epoch  # resumed mid-epoch
            for i, (xb, yb) in enumerate(self.loader):
                if i < skip:
                    continue
                loss = self._train_step(xb, yb)
                self.step += 1
                self.guard.step(loss, step=self.step)
                _write(self.run_dir / "progress" / f"rank{self.rank}", str(self.step))
                if self.step in self.args.save_at:
                    self._save()
                if self.args.eval_every and self.step % self.args.eval_every == 0:
                    self._evaluate()
                if self._check_stop():
                    break
            epoch += 1
        self.guard.close()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    Job(args).run()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
