"""Trainer kit cost: overhead per step as % of step time, and checksum throughput.

Single process on the CPU (an MLP of ~0.2M or ~4.2M parameters, AdamW), and a 2-process
gloo DDP job of the same model. For each setting the kit's own time per step is measured
directly: ``guard.step`` plus its work inside the optimizer pre-hook and the DDP comm hook
(the all-reduce itself is DDP's, with or without the kit). kit ms = median kit time of the
steps without a digest + (median with - median without) / N; kit % = kit ms /
the plain loop's median step; the settings' jobs are stepped in turn (plain, every step,
every 10, off, plain, ...) so that other processes' load hits them alike.
Also: attach cost (layout, manifest, hooks) and the parameter digest's throughput in MB/s
(fp32, bf16).

    python -m bench.trainer_cost [--model small|medium] [--batch 64] [--steps 60] [--ddp]
        [--throughput]
"""

from __future__ import annotations

import argparse
import atexit
import os
import statistics
import subprocess
import sys
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

WIDTHS = {
    # ~0.2M parameters: the size of a test job's model
    "small": [128, 512, 256, 10],
    # ~4.2M parameters
    "medium": [512, 1024, 1024, 1024, 1024, 512, 10],
}
MODEL = "medium"
BATCH = 64


def build(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    widths = WIDTHS[MODEL]
    layers: list[torch.nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.GELU()]
    return torch.nn.Sequential(*layers[:-1])


class HookTimer:
    """Accumulates the time of the kit's own work inside hooks (patched in for the bench).

    Timed: the optimizer pre-hook (lr, grad norm without DDP) and every sum of squares the
    DDP comm hook adds (local before, global after the all-reduce). Not timed: the
    all-reduce itself, which DDP runs with or without the kit.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._lock = threading.Lock()
        orig_pre, orig_sumsq = kit_grads.OptimizerProbe._pre_step, kit_grads._sumsq

        def pre(probe: Any, *args: Any) -> None:
            t = time.perf_counter()
            orig_pre(probe, *args)
            self._add(time.perf_counter() - t)

        def sumsq(tensor: torch.Tensor) -> torch.Tensor:
            t = time.perf_counter()
            out = orig_sumsq(tensor)
            self._add(time.perf_counter() - t)
            return out

        kit_grads.OptimizerProbe._pre_step = pre  # type: ignore[method-assign]
        kit_grads._sumsq = sumsq

    def _add(self, seconds: float) -> None:
        with self._lock:
            self.total += seconds

    def take(self) -> float:
        with self._lock:
            out, self.total = self.total, 0.0
        return out


class Job:
    """One setting's model, optimizer and (maybe) guard, stepped in turn with the others."""

    def __init__(self, model: torch.nn.Module, guard_opts: dict[str, Any] | None, sock: str,
                 rank: int, world: int) -> None:
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(rank)
        width = WIDTHS[MODEL][0]
        self.data = [(torch.randn(BATCH, width, generator=gen),
                      torch.randint(0, 10, (BATCH,), generator=gen)) for _ in range(8)]
        self.guard: TrainGuard | None = None
        self.attach_s = 0.0
        if guard_opts is not None:
            reporter = StepReporter("bench", rank, world, socket_path=sock, node="bench")
            t = time.perf_counter()
            self.guard = TrainGuard.attach(model, self.opt, reporter=reporter, **guard_opts)
            self.attach_s = time.perf_counter() - t
        self.every = self.guard.checksum_every if self.guard is not None else 0
        self.step_times: list[float] = []
        self.kit_times: list[float] = []

    def step(self, i: int) -> None:
        t0 = time.perf_counter()
        x, y = self.data[i % len(self.data)]
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        t1 = time.perf_counter()
        if self.guard is not None:
            self.guard.step(loss)
        t2 = time.perf_counter()
        self.step_times.append(t2 - t0)
        self.kit_times.append(t2 - t1 + HOOKS.take())

    def result(self, warm: int) -> dict[str, float]:
        if self.guard is not None:
            self.guard.close()
        every = self.every
        digested = [every and i % every == 0 for i in range(len(self.kit_times))]
        with_digest = [k for i, k in enumerate(self.kit_times) if i >= warm and digested[i]]
        without = [k for i, k in enumerate(self.kit_times) if i >= warm and not digested[i]]
        rest = statistics.median(without) if without else 0.0
        digest = statistics.median(with_digest) - rest if with_digest else 0.0
        return {"step_ms": 1e3 * statistics.median(self.step_times[warm:]),
                "kit_ms": 1e3 * (rest + (digest / every if every else 0.0)),
                "attach_ms": 1e3 * self.attach_s}


def run(settings: list[tuple[str, dict[str, Any] | None]], steps: int, sock: str,
        wrap: Any = None, rank: int = 0, world: int = 1) -> list[tuple[str, dict[str, float]]]:
    """Step every setting's job in turn, so other processes' load hits them alike."""
    jobs = []
    for _, opts in settings:
        model = build()
        jobs.append(Job(wrap(model) if wrap else model, opts, sock, rank, world))
    for i in range(steps):
        for job in jobs:
            job.step(i)
    return [(name, job.result(steps // 5)) for (name, _), job in zip(settings, jobs, strict=True)]


SETTINGS: list[tuple[str, dict[str, Any] | None]] = [
    ("plain loop (no kit)", None),
    ("kit, checksum every step", {"checksum_every": 1}),
    ("kit, checksum every 10 steps", {"checksum_every": 10}),
    ("kit, checksum off", {"checksum_every": 0}),
]


def table(results: list[tuple[str, dict[str, float]]]) -> None:
    base = results[0][1]["step_ms"]  # the plain loop, stepped in turn with the others
    print(f"{'setting':34} {'step ms':>8} {'kit ms':>8} {'kit %':>7} {'attach ms':>9}")
    for name, r in results:
        pct = 100 * r["kit_ms"] / base
        print(f"{name:34} {r['step_ms']:8.2f} {r['kit_ms']:8.3f} {pct:6.2f}% {r['attach_ms']:9.1f}")


def throughput() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        params = [torch.randn(4096, 4096).to(dtype) for _ in range(4)]
        for use_numpy in (True, False):
            ck = ParamChecksum(params)
            ck.use_numpy = use_numpy
            ck.digest()
            times = []
            for _ in range(5):
                t = time.perf_counter()
                ck.digest()
                times.append(time.perf_counter() - t)
            mb, median = ck.nbytes / 1e6, statistics.median(times)
            path = "numpy" if use_numpy else "torch"
            print(f"checksum {str(dtype):15} {path:5} {mb:7.1f} MB {1e3 * median:8.1f} ms"
                  f" {mb / median:8.0f} MB/s")


def _ddp_worker(rank: int, world: int, steps: int, sock: str, init: str, model: str,
                batch: int) -> None:
    from torch.nn.parallel import DistributedDataParallel

    global HOOKS, MODEL, BATCH
    HOOKS, MODEL, BATCH = HookTimer(), model, batch
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results = run(SETTINGS, steps, sock, DistributedDataParallel, rank, world)
    if rank == 0:
        print(f"\n2-process gloo DDP (1 thread per rank), {steps} steps per setting:")
        table(results)
    dist.destroy_process_group()


HOOKS: HookTimer


def drain_socket() -> str:
    """A process standing in for the agent: it reads and discards what arrives (a thread
    here would compete with the training loop for the GIL, which the agent does not)."""
    path = str(Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp")) / "steps.sock")
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "while True: s.recv(1 << 17)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    atexit.register(proc.kill)
    return path


def main() -> None:
    global HOOKS, MODEL, BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--model", choices=sorted(WIDTHS), default="medium")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ddp", action="store_true", help="also a 2-process gloo DDP job")
    parser.add_argument("--throughput", action="store_true", help="checksum MB/s")
    args = parser.parse_args()
    HOOKS, MODEL, BATCH = HookTimer(), args.model, args.batch
    sock = drain_socket()
    model = build()
    n = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads,"
          f" model {MODEL} {n / 1e6:.2f}M params, batch {BATCH}, {args.steps} steps per setting")
    table(run(SETTINGS, args.steps, sock))
    if args.throughput:
        throughput()
    if args.ddp:
        init = str(Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp")) / "init")
        mp.spawn(_ddp_worker, args=(2, args.steps, sock, init, MODEL, BATCH), nprocs=2, join=True)


if __name__ == "__main__":
    main()
