"""Trainer kit cost: overhead per step as % of step time, and checksum throughput.

Models (``--model``): ``e2e`` (the MLP of ``tests/integration/trainer_script.py``:
32→64→64→4 with ReLU, SGD with momentum, batch 32, and with ``--pad-ms 40`` the 40 ms
sleep per step that script uses for a GPU step's device time), ``small`` (~0.2M
parameters) and ``medium`` (~4.2M), GELU MLPs with AdamW. One process, and with ``--ddp``
a 2-rank gloo DDP job of the same model.

For each setting the kit's own time per step is measured directly: ``guard.step`` plus its
work inside the optimizer pre-hook and the DDP comm hook (the all-reduce itself is DDP's,
with or without the kit). kit ms = median kit time of the steps without a digest + (median
with − median without) × the share of steps digested after warm-up; kit % = kit ms / the
plain loop's median step. The settings' jobs are stepped in turn (plain, auto, every step,
…, plain, …) so that other processes' load hits them alike (each guard's step clock is
restarted at its own job's step). Δ step: the setting's median step minus the plain
loop's, which includes what the direct timing cannot see (a Python comm hook replacing
DDP's built-in one, the record's thread, caches warmed or cooled for the optimizer) and is
noisy under load.
Also: attach (layout, manifest, hooks), the digest's throughput in MB/s (fp32, bf16) and
the load average before and after.

It runs against whichever ``trainguard`` is on ``PYTHONPATH``; settings an older kit does
not accept are shown as n/a, so one command measures before and after:

    python -m bench.trainer_cost [--model e2e|small|medium] [--batch N] [--steps 200]
        [--pad-ms 0] [--ddp] [--throughput]
    PYTHONPATH=<old tree> python bench/trainer_cost.py ...   # the same, for an old kit
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

import trainguard
from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer import TrainGuard
from trainguard.agents.trainer import grads as kit_grads
from trainguard.agents.trainer.checksum import ParamChecksum

WIDTHS = {
    "e2e": [32, 64, 64, 4],                              # tests/integration/trainer_script.py
    "small": [128, 512, 256, 10],                        # ~0.2M parameters
    "medium": [512, 1024, 1024, 1024, 1024, 512, 10],    # ~4.2M parameters
}
BATCH = {"e2e": 32, "small": 64, "medium": 64}


class Opts:
    """The run's shape (set once per process from the command line)."""

    model = "e2e"
    batch = 32
    pad_s = 0.0


def build(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    widths = WIDTHS[Opts.model]
    act = torch.nn.ReLU if Opts.model == "e2e" else torch.nn.GELU
    layers: list[torch.nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [torch.nn.Linear(a, b), act()]
    return torch.nn.Sequential(*layers[:-1])


def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    if Opts.model == "e2e":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return torch.optim.AdamW(model.parameters(), lr=1e-3)


class HookTimer:
    """Accumulates the kit's own time inside hooks (patched in for the bench).

    Timed: the optimizer pre-hook (lr, grad norm without DDP) and the comm hook's own work
    (the norms before and after the all-reduce, the bookkeeping). Not timed: the
    all-reduce itself, which DDP runs with or without the kit.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._lock = threading.Lock()
        self._wrap(kit_grads.OptimizerProbe, "_pre_step")
        if hasattr(kit_grads, "_sumsq"):  # the kit before the cost work: norms only
            self._wrap(kit_grads, "_sumsq")
        else:
            self._wrap(kit_grads.CommTracer, "_enter")
            self._wrap(kit_grads.CommTracer, "_done")

    def _wrap(self, owner: Any, name: str) -> None:
        orig = getattr(owner, name)

        def timed(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(*args)
            finally:
                self._add(time.perf_counter() - t)

        setattr(owner, name, timed)

    def _add(self, seconds: float) -> None:
        with self._lock:
            self.total += seconds

    def take(self) -> float:
        with self._lock:
            out, self.total = self.total, 0.0
        return out


HOOKS: HookTimer


class Job:
    """One setting's model, optimizer and (maybe) guard, stepped in turn with the others."""

    def __init__(self, model: torch.nn.Module, guard_opts: dict[str, Any] | None, sock: str,
                 rank: int, world: int) -> None:
        self.model = model
        self.opt = optimizer(model)
        gen = torch.Generator().manual_seed(rank)
        width = WIDTHS[Opts.model][0]
        self.data = [(torch.randn(Opts.batch, width, generator=gen),
                      torch.randint(0, WIDTHS[Opts.model][-1], (Opts.batch,), generator=gen))
                     for _ in range(8)]
        self.guard: Any = None
        self.attach_s = self.manifest_s = 0.0
        self.digested = False
        if guard_opts is not None:
            reporter = StepReporter("bench", rank, world, socket_path=sock, node="bench")
            t = time.perf_counter()
            self.guard = TrainGuard.attach(model, self.opt, reporter=reporter, **guard_opts)
            self.attach_s = time.perf_counter() - t
            self.manifest_s = getattr(self.guard.manifest, "seconds", 0.0)
            digest = self.guard.checksum.digest

            def flagged() -> Any:
                self.digested = True
                return digest()

            self.guard.checksum.digest = flagged
        self.step_times: list[float] = []
        self.kit_times: list[float] = []
        self.digests: list[bool] = []

    def step(self, i: int) -> None:
        if self.guard is not None:
            # The jobs are stepped in turn: the kit's step clock starts at this job's step,
            # as in a loop of its own (else it would count the other jobs' steps too).
            self.guard._step_start = self.guard._clock()
        t0 = time.perf_counter()
        x, y = self.data[i % len(self.data)]
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        if Opts.pad_s:
            time.sleep(Opts.pad_s)  # the e2e script's stand-in for a GPU step's device time
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        t1 = time.perf_counter()
        self.digested = False
        if self.guard is not None:
            self.guard.step(loss)
        t2 = time.perf_counter()
        self.step_times.append(t2 - t0)
        self.kit_times.append(t2 - t1 + HOOKS.take())
        self.digests.append(self.digested)

    def result(self, warm: int) -> dict[str, float]:
        every = 0
        if self.guard is not None:
            every = int(self.guard.checksum_every)
            self.guard.close()
        kit, dig = self.kit_times[warm:], self.digests[warm:]
        with_digest = [k for k, d in zip(kit, dig, strict=True) if d]
        without = [k for k, d in zip(kit, dig, strict=True) if not d]
        rest = statistics.median(without) if without else 0.0
        extra = statistics.median(with_digest) - rest if with_digest else 0.0
        share = len(with_digest) / len(kit) if kit else 0.0
        return {"step_ms": 1e3 * statistics.median(self.step_times[warm:]),
                "kit_ms": 1e3 * (rest + extra * share), "every": every,
                "attach_ms": 1e3 * self.attach_s, "manifest_ms": 1e3 * self.manifest_s}


SETTINGS: list[tuple[str, dict[str, Any] | None]] = [
    ("plain loop (no kit)", None),
    ("kit default", {}),
    ("checksum every step", {"checksum_every": 1}),
    ("checksum every 16", {"checksum_every": 16}),
    ("checksum off", {"checksum_every": 0}),
    ("checksum off, no grad norms", {"checksum_every": 0, "grad_norms": False}),
]


def run(steps: int, sock: str, wrap: Any = None, rank: int = 0,
        world: int = 1) -> list[tuple[str, dict[str, float] | None]]:
    """Step every setting's job in turn, so other processes' load hits them alike."""
    jobs: list[Job | None] = []
    for _, opts in SETTINGS:
        model = build()
        try:
            jobs.append(Job(wrap(model) if wrap else model, opts, sock, rank, world))
        except TypeError:  # a keyword this kit does not have
            jobs.append(None)
    for i in range(steps):
        for job in jobs:
            if job is not None:
                job.step(i)
    return [(name, job.result(steps // 5) if job is not None else None)
            for (name, _), job in zip(SETTINGS, jobs, strict=True)]


def table(results: list[tuple[str, dict[str, float] | None]], delta: bool = False) -> None:
    base = results[0][1]
    assert base is not None
    head = f"{'setting':30} {'every':>5} {'step ms':>8} {'kit ms':>8} {'kit %':>7}"
    print(head + (f" {'Δ step ms':>9}" if delta else "") + f" {'attach ms':>9} {'manifest':>8}")
    for name, r in results:
        if r is None:
            print(f"{name:30} n/a (not in this kit)")
            continue
        pct = 100 * r["kit_ms"] / base["step_ms"]
        line = (f"{name:30} {r['every']:5d} {r['step_ms']:8.2f} {r['kit_ms']:8.3f} {pct:6.2f}%")
        if delta:
            line += f" {r['step_ms'] - base['step_ms']:9.2f}"
        print(line + f" {r['attach_ms']:9.1f} {r['manifest_ms']:8.1f}")


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


def _ddp_worker(rank: int, world: int, steps: int, sock: str, init: str,
                shape: tuple[str, int, float]) -> None:
    from torch.nn.parallel import DistributedDataParallel

    global HOOKS
    Opts.model, Opts.batch, Opts.pad_s = shape
    HOOKS = HookTimer()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    results = run(steps, sock, DistributedDataParallel, rank, world)
    if rank == 0:
        print(f"\n2-process gloo DDP (1 thread per rank), {steps} steps per setting:")
        table(results, delta=True)
    dist.destroy_process_group()


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
    global HOOKS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", choices=sorted(WIDTHS), default="e2e")
    parser.add_argument("--batch", type=int, default=None, help="default: the model's")
    parser.add_argument("--pad-ms", type=float, default=0.0,
                        help="sleep per step (the e2e script's device-time stand-in: 40)")
    parser.add_argument("--ddp", action="store_true", help="also a 2-process gloo DDP job")
    parser.add_argument("--throughput", action="store_true", help="checksum MB/s")
    args = parser.parse_args()
    Opts.model, Opts.pad_s = args.model, args.pad_ms / 1e3
    Opts.batch = args.batch or BATCH[args.model]
    HOOKS = HookTimer()
    sock = drain_socket()
    n = sum(p.numel() for p in build().parameters())
    load = os.getloadavg()
    print(f"kit {Path(trainguard.__file__).parent.parent}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, model {Opts.model} "
          f"{n / 1e6:.3f}M params, batch {Opts.batch}, pad {args.pad_ms:g} ms, {args.steps} "
          f"steps per setting, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    table(run(args.steps, sock), delta=True)
    if args.throughput:
        throughput()
    if args.ddp:
        init = str(Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp")) / "init")
        mp.spawn(_ddp_worker, args=(2, args.steps, sock, init,
                                    (Opts.model, Opts.batch, Opts.pad_s)), nprocs=2, join=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
