"""Trainer kit cost: overhead per step as % of step time, and checksum throughput.

Single process on the CPU (an MLP of ~0.2M or ~4.2M parameters, AdamW), and a 2-process
gloo DDP job of the same model. For each setting the kit's own time per step is measured
directly: ``guard.step`` plus its work inside the optimizer pre-hook and the DDP comm hook
(the all-reduce itself is DDP's, with or without the kit). kit ms = median kit time of the
steps without a digest + (median with - median without) / N; kit % = kit ms / the rest of
the same run's median step, so other processes' load between settings skews it less.
Also: attach cost (layout, manifest, hooks) and the parameter digest's throughput in MB/s
(fp32, bf16).

    python -m bench.trainer_cost [--model small|medium] [--batch 64] [--steps 60] [--ddp]
        [--throughput]
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


def run(model: torch.nn.Module, steps: int, guard_opts: dict[str, Any] | None,
        sock: str, rank: int = 0, world: int = 1) -> dict[str, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(rank)
    width = WIDTHS[MODEL][0]
    data = [(torch.randn(BATCH, width, generator=gen),
             torch.randint(0, 10, (BATCH,), generator=gen)) for _ in range(8)]
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
    every = guard.checksum_every if guard is not None else 0
    if guard is not None:
        guard.close()
    warm = steps // 5
    # Medians (robust to other processes' load), split by whether the step digested the
    # parameters; every-N work is then amortised over N steps.
    with_digest = [k for i, k in enumerate(kit_times) if i >= warm and every and i % every == 0]
    without = [k for i, k in enumerate(kit_times) if i >= warm and not (every and i % every == 0)]
    rest = statistics.median(without) if without else 0.0
    digest = statistics.median(with_digest) - rest if with_digest and without else (
        statistics.median(with_digest) if with_digest else 0.0)
    kit = rest + (digest / every if every else 0.0)
    return {"step_ms": 1e3 * statistics.median(step_times[warm:]), "kit_ms": 1e3 * kit,
            "attach_ms": 1e3 * attach_s}


SETTINGS: list[tuple[str, dict[str, Any] | None]] = [
    ("plain loop (no kit)", None),
    ("kit, checksum every step", {"checksum_every": 1}),
    ("kit, checksum every 10 steps", {"checksum_every": 10}),
    ("kit, checksum off", {"checksum_every": 0}),
]


def table(results: list[tuple[str, dict[str, float]]]) -> None:
    # kit % = the kit's time / the rest of the same run's step: each setting is its own
    # baseline, so load from other processes between settings does not skew it.
    print(f"{'setting':34} {'step ms':>8} {'kit ms':>8} {'kit %':>7} {'attach ms':>9}")
    for name, r in results:
        pct = 100 * r["kit_ms"] / max(r["step_ms"] - r["kit_ms"], 1e-9)
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
    results = [(name, run(build(), args.steps, opts, sock)) for name, opts in SETTINGS]
    table(results)
    if args.throughput:
        throughput()
    if args.ddp:
        init = str(Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp")) / "init")
        mp.spawn(_ddp_worker, args=(2, args.steps, sock, init, MODEL, BATCH), nprocs=2, join=True)


if __name__ == "__main__":
    main()
