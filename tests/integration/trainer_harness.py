"""Process management for the real-job end-to-end tests: node agents, torchrun, faults, findings.

:class:`NodeAgent` runs ``trainguard agent --backend simulated`` as its own process with its
own step socket and node name; :class:`Launch` starts one run of the training job
(:mod:`tests.integration.trainer_script`) as one ``torchrun`` per node, c10d rendezvous on
127.0.0.1, each node's ranks pointed at their node's agent; :class:`Findings` reads what
the worker concluded. Every process is started in its own process group and
killed with it, whatever happens. The sabotage that is not the training script's own (a
shard edited on disk, a node's own torch tree) is in :mod:`tests.integration.trainer_faults`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainguard.local.broker import free_port
from trainguard.local.worker import WorkerProcess

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("trainer_script.py")
#: What the benign runs must not raise, and what a sabotage run must raise.
PAGING = ("integrity", "availability")


def make_data(path: Path, *, n: int = 2560, seed: int = 0) -> Path:
    """A synthetic 4-class problem (a random linear teacher plus noise), written as .npz."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    teacher = rng.normal(size=(32, 4)).astype(np.float32)
    y = np.argmax(x @ teacher + 0.5 * rng.normal(size=(n, 4)), axis=1).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class NodeAgent:
    """One node agent process (simulated GPUs) with its own step socket and node name."""

    name: str
    workdir: Path
    sock: Path = field(init=False)
    log: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        # AF_UNIX paths are short: the socket lives in its own directory under /tmp.
        self.sock = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp")) / "steps.sock"
        self.log = self.workdir / f"agent-{self.name}.log"

    def start(self, bootstrap: str, prefix: str, *, interval: float = 1.0) -> None:
        cmd = [sys.executable, "-m", "trainguard.cli", "--log-level", "INFO", "agent",
               "--backend", "simulated", "--sim-gpus", "2", "--interval", f"{interval:g}",
               "--bootstrap", bootstrap, "--topic-prefix", prefix, "--cluster", "e2e",
               "--node", self.name, "--spool-dir", str(self.workdir / f"spool-{self.name}"),
               "--steps-socket", str(self.sock)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.sock.exists():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.name} exited:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.name} did not listen on {self.sock} within "
                                   f"{timeout:g}s:\n{_tail(self.log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.sock.parent, ignore_errors=True)


@dataclass(frozen=True)
class RankInfo:
    rank: int
    pid: int
    node: str
    local_rank: int
    world: int


@dataclass
class Placement:
    """How many ranks run on a node, and what its ranks import first (its own torch)."""

    agent: NodeAgent
    nproc: int
    pythonpath: Sequence[Path] = ()


class Launch:
    """One start of the training job: one torchrun per node, all in their own process groups."""

    def __init__(self, job: str, run_dir: Path, placements: Sequence[Placement],
                 script_args: Sequence[str]) -> None:
        self.job = job
        self.run_dir = run_dir
        self.placements = list(placements)
        self.script_args = [*script_args, "--run-dir", str(run_dir)]
        self.world = sum(p.nproc for p in placements)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.started = 0.0

    def start(self) -> Launch:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        endpoint = f"127.0.0.1:{free_port()}"
        self.started = time.time()
        for i, p in enumerate(self.placements):
            cmd = [sys.executable, "-m", "torch.distributed.run",
                   "--nnodes", str(len(self.placements)), "--nproc-per-node", str(p.nproc),
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                   "--rdzv-id", f"{self.job}-{self.run_dir.name}",
                   "--rdzv-conf", "join_timeout=90", "--max-restarts", "0",
                   "--monitor-interval", "0.2", "--local-addr", "127.0.0.1",
                   str(SCRIPT), *self.script_args]
            env = {**os.environ,
                   "PYTHONPATH": os.pathsep.join([*map(str, p.pythonpath), str(REPO)]),
                   "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                   "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
                   "TRAINGUARD_JOB_ID": self.job, "TRAINGUARD_NODE": p.agent.name,
                   "TRAINGUARD_STEPS_SOCKET": str(p.agent.sock)}
            log = self.run_dir / f"torchrun-{i}-{p.agent.name}.log"
            with open(log, "ab") as fh:
                self.procs.append(subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                    env=env, cwd=self.run_dir, start_new_session=True))
            self.logs.append(log)
        return self

    # -- what the ranks say ---------------------------------------------------------------
    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {log.name}\n{_tail(log, lines)}" for log in self.logs)

    def _check_running(self, what: str) -> None:
        if self.procs and all(p.poll() is not None for p in self.procs):
            raise RuntimeError(f"job {self.job} ended before {what}: exit codes "
                               f"{[p.returncode for p in self.procs]}\n{self.log_tail()}")

    def ranks(self, timeout: float = 120.0) -> dict[int, RankInfo]:
        """Every rank's pid and node, once all have started."""
        deadline = time.monotonic() + timeout
        folder = self.run_dir / "ranks"
        while True:
            files = list(folder.glob("rank*.json")) if folder.exists() else []
            if len(files) >= self.world:
                infos = [RankInfo(**json.loads(f.read_text())) for f in files]
                return {i.rank: i for i in infos}
            self._check_running("all ranks started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(files)}/{self.world} ranks of job {self.job} started "
                                   f"within {timeout:g}s\n{self.log_tail()}")
            time.sleep(0.2)

    def progress(self) -> dict[int, int]:
        folder = self.run_dir / "progress"
        out = {}
        for f in folder.glob("rank*") if folder.exists() else []:
            if f.name.startswith("rank") and not f.name.endswith(".tmp"):
                try:
                    out[int(f.name[4:])] = int(f.read_text() or 0)
                except ValueError:
                    continue
        return out

    def wait_step(self, step: int, *, rank: int | None = None, timeout: float = 120.0) -> None:
        """Wait until ``rank`` (default: every rank) finished ``step``."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.progress()
            if rank is not None and done.get(rank, -1) >= step:
                return
            if rank is None and len(done) >= self.world and min(done.values()) >= step:
                return
            self._check_running(f"step {step}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {self.job} did not reach step {step} within "
                                   f"{timeout:g}s (progress {done})\n{self.log_tail()}")
            time.sleep(0.05)

    def fault(self, timeout: float = 120.0) -> dict[str, Any]:
        """What the training script's ``--fault`` did, and when."""
        path = self.run_dir / "fault.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            self._check_running("its fault was injected")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no fault injected within {timeout:g}s\n{self.log_tail()}")
            time.sleep(0.05)
        return json.loads(path.read_text())

    # -- ending it ------------------------------------------------------------------------
    def stop_after(self, margin: int = 4) -> int:
        """Ask every rank to stop ``margin`` steps past the furthest progress seen."""
        at = max(self.progress().values(), default=0) + margin
        path = self.run_dir / "stop"
        tmp = path.with_name("stop.tmp")
        tmp.write_text(str(at))
        os.replace(tmp, path)
        return at

    def wait(self, timeout: float = 90.0) -> list[int]:
        """Wait for both torchruns to exit; their exit codes."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"job {self.job} still running after {timeout:g}s\n"
                                   f"{self.log_tail()}") from exc
        return [int(p.returncode) for p in self.procs]

    def finish(self, margin: int = 4, timeout: float = 90.0) -> list[int]:
        """Stop cleanly (every rank says bye ``finished``) and wait."""
        self.stop_after(margin)
        return self.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM to every torchrun: the launcher tears the job down (a job stop)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGCONT then SIGKILL to every rank's and torchrun's process group (idempotent)."""
        folder = self.run_dir / "ranks"
        pids = [json.loads(f.read_text())["pid"] for f in folder.glob("rank*.json")] \
            if folder.exists() else []
        for pid in pids:
            _killpg(pid, signal.SIGCONT)
            _killpg(pid, signal.SIGKILL)
        for p in self.procs:
            _killpg(p.pid, signal.SIGCONT)
            _killpg(p.pid, signal.SIGKILL)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@dataclass
class Finding:
    check: str
    category: str
    ts: float
    first_seen: float
    ranks: list[int]
    nodes: list[str]
    summary: str
    evidence: str


class Findings:
    """What the worker concluded about a job, read through the worker."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker

    def of(self, job: str) -> list[Finding]:
        rows = self.worker.query(
            "SELECT check, category, toFloat64(ts) AS ts, toFloat64(first_seen) AS first_seen,"
            " ranks, nodes, summary, evidence FROM {database}.findings "
            f"WHERE job_id = '{job}' ORDER BY ts").dicts()
        return [Finding(**{**r, "ranks": list(r["ranks"]), "nodes": list(r["nodes"])})
                for r in rows]

    def wait_for(self, job: str, check: str, timeout: float = 150.0) -> Finding | None:
        """The first finding of ``check`` on ``job`` (by event time), once one is stored."""
        deadline = time.monotonic() + timeout
        while True:
            self.worker.check_alive()
            hits = [f for f in self.of(job) if f.check == check]
            if hits:
                return min(hits, key=lambda f: f.ts)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    def settle(self, nodes: Iterable[str], after: float, timeout: float = 60.0) -> None:
        """Wait until every node's agent has sent samples stamped ``after`` or later (so the
        worker's event clock has passed it) and they are stored."""
        names = sorted(set(nodes))
        listed = ", ".join(f"'{n}'" for n in names)
        sql = ("SELECT count() FROM (SELECT node, max(toFloat64(ts)) AS last FROM "
               f"{{database}}.sample_batches WHERE node IN ({listed}) GROUP BY node) "
               f"WHERE last >= {after:.3f}")
        got = self.worker.wait_for(sql, len(names), timeout=timeout)
        if got < len(names):
            raise RuntimeError(f"the agents' samples did not reach {after:.3f} within "
                               f"{timeout:g}s ({got}/{len(names)} nodes)")


@dataclass
class ScenarioResult:
    """One row of the run's table (printed at the end of the module)."""

    name: str
    check: str
    culprit: str
    latency_s: float | None
    wall_s: float
    note: str = ""

    def row(self) -> str:
        latency = "-" if self.latency_s is None else f"{self.latency_s:.1f}"
        return (f"{self.name:<22} {self.check:<20} {self.culprit:<18} {latency:>8} "
                f"{self.wall_s:>7.1f}  {self.note}")


def culprit(rank: int, ranks: dict[int, RankInfo]) -> str:
    return f"rank {rank}@{ranks[rank].node}"


def pick_rank(ranks: dict[int, RankInfo], node: str, local_rank: int = 1) -> int:
    """The rank on ``node`` with ``local_rank`` (else any rank of that node but rank 0)."""
    on_node = sorted(r for r, i in ranks.items() if i.node == node)
    for r in on_node:
        if ranks[r].local_rank == local_rank:
            return r
    return [r for r in on_node if r != 0][0]
