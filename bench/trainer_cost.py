"""Trainer kit cost: overhead per step as % of step time, and checksum throughput.

Single process on the CPU (a ~4.2M-parameter MLP, batch 64, AdamW), and a 2-process gloo
DDP job of the same model. For each setting the kit's own time per step is measured
directly (``guard.step`` plus the time inside its optimizer pre-hook / comm hook), against
the median step time of the plain loop; the A/B of whole steps is printed too (noisy on a
shared machine). Also: attach cost (layout, manifest, hooks) and the parameter digest's
throughput in MB/s of parameters (fp32 and bf16).

    python -m bench.trainer_cost [--steps 60] [--ddp]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard
from trainguard.agents.trainer import grads as kit_grads
from trainguard.agents.trainer.checksum import ParamChecksum


def build(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(512, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1024), torch.nn.GELU(),
        torch.nn.Linear(1024, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1024), torch.nn.GELU(),
        torch.nn.Linear(1024, 512), torch.nn.GELU(), torch.nn.Linear(512, 10))


class HookTimer:
    """Accumulates the time spent inside the kit's hooks (patched in for the bench)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._orig_pre = kit_grads.OptimizerProbe._pre_step
        self._orig_bucket = kit_grads.CommTracer.on_bucket
        timer = self

        def pre(probe: Any, *args: Any) -> None:
            t = time.perf_counter()
            self._orig_pre(probe, *args)
            timer.total += time.perf_counter() - t

        def bucket(tracer: Any, b: Any) -> Any:
            t = time.perf_counter()
            out = self._orig_bucket(tracer, b)
            timer.total += time.perf_counter() - t
            return out

        kit_grads.OptimizerProbe._pre_step = pre  # type: ignore[method-assign]
        kit_grads.CommTracer.on_bucket = bucket  # type: ignore[method-assign]

    def take(self) -> float:
        out, self.total = self.total, 0.0
        return out


def run(model: torch.nn.Module, steps: int, guard_opts: dict[str, Any] | None,
        sock: str, rank: int = 0, world: int = 1) -> dict[str, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(rank)
    data = [(torch.randn(64, 512, generator=gen), torch.randint(0, 10, (64,), generator=gen))
            for _ in range(8)]
    guard = None
    attach_s = 0.0
    if guard_opts is not None:
        reporter = StepReporter("bench", rank, world, socket_path=sock, node="bench")
        t = time.perf_counter()
        guard = TrainGuard.attach(model, opt, reporter=reporter, **guard_opts)
        attach_s = time.perf_counter() - t
    timer = HOOKS
    step_times, kit_times = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        x, y = data[i % len(data)]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        t1 = time.perf_counter()
        if guard is not None:
            guard.step(loss)
        t2 = time.perf_counter()
        step_times.append(t2 - t0)
        kit_times.append(t2 - t1 + timer.take())
    if guard is not None:
        guard.close()
    warm = steps // 5
    return {"step_ms": 1e3 * statistics.median(step_times[warm:]),
            "kit_ms": 1e3 * statistics.median(kit_times[warm:]),
            "attach_ms": 1e3 * attach_s}


SETTINGS: list[tuple[str, dict[str, Any] | None]] = [
    ("plain loop (no kit)", None),
    ("kit, checksum every step", {"checksum_every": 1}),
    ("kit, checksum every 10 steps", {"checksum_every": 10}),
    ("kit, checksum off", {"checksum_every": 0}),
]


def table(results: list[tuple[str, dict[str, float]]]) -> None:
    base = results[0][1]["step_ms"]
    print(f"{'setting':34} {'step ms':>8} {'kit ms':>8} {'kit %':>7} {'attach ms':>9}")
    for name, r in results:
        pct = 100 * r["kit_ms"] / base
        print(f"{name:34} {r['step_ms']:8.2f} {r['kit_ms']:8.3f} {pct:6.2f}% {r['attach_ms']:9.1f}")


def throughput() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        params = [torch.randn(4096, 4096).to(dtype) for _ in range(4)]
        ck = ParamChecksum(params)
        ck.digest()
        times = []
        for _ in range(7):
            t = time.perf_counter()
            ck.digest()
            times.append(time.perf_counter() - t)
        mb = ck.nbytes / 1e6
        print(f"checksum {str(dtype):15} {mb:7.1f} MB  {1e3 * statistics.median(times):7.1f} ms"
              f"  {mb / statistics.median(times):8.0f} MB/s")


def _ddp_worker(rank: int, world: int, steps: int, sock: str, init: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    global HOOKS
    HOOKS = HookTimer()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results = []
    for name, opts in SETTINGS[:3]:
        model = DistributedDataParallel(build())
        results.append((name, run(model, steps, opts, sock, rank, world)))
    if rank == 0:
        print(f"\n2-process gloo DDP (1 thread per rank), {steps} steps per setting:")
        table(results)
    dist.destroy_process_group()


HOOKS: HookTimer


def drain_socket() -> str:
    """A socket standing in for the agent: a thread reads and discards what arrives."""
    path = str(Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp")) / "steps.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)

    def drain() -> None:
        while True:
            sock.recv(1 << 17)

    threading.Thread(target=drain, daemon=True).start()
    return path


def main() -> None:
    global HOOKS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--ddp", action="store_true", help="also a 2-process gloo DDP job")
    args = parser.parse_args()
    HOOKS = HookTimer()
    sock = drain_socket()
    model = build()
    n = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads,"
          f" model {n / 1e6:.2f}M params, {args.steps} steps per setting")
    results = [(name, run(build(), args.steps, opts, sock)) for name, opts in SETTINGS]
    table(results)
    throughput()
    if args.ddp:
        init = str(Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp")) / "init")
        mp.spawn(_ddp_worker, args=(2, args.steps, sock, init), nprocs=2, join=True)


if __name__ == "__main__":
    main()
