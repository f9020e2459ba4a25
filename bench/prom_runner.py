"""Processes for the Prometheus side-by-side: the fleet exporter shards and Prometheus itself.

Both are context managers that start their processes on 127.0.0.1 and stop them on exit,
errors and Ctrl-C included; their children also get SIGTERM if this process dies (Linux
``PR_SET_PDEATHSIG``), so nothing outlives a killed benchmark. Prometheus runs with its own
config, a TSDB in the given directory and a free port, never Debian's service or its data.
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.procstat import proc_cpu_seconds
from trainguard.errors import TrainguardError
from trainguard.local.broker import free_ports

__all__ = ["PROMETHEUS_BIN", "FleetExporter", "PrometheusProcess", "file_sd_groups",
           "prometheus_config"]

log = logging.getLogger(__name__)

PROMETHEUS_BIN = "/usr/bin/prometheus"  # Debian's package `prometheus` (2.42 on bookworm)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM this child when the benchmark process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log.warning("process did not stop on SIGTERM; killing name=%s pid=%d", name, proc.pid)
            proc.kill()
            proc.wait(timeout=15)


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (127.0.0.1 only)
        return bytes(resp.read())


def _wait(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None,
          log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_file.read_text()[-2000:] if log_file and log_file.exists() else ""
            raise TrainguardError(f"{what}: process exited with {proc.returncode}: {tail}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TrainguardError(f"{what}: not ready after {timeout:.0f} s")


def file_sd_groups(nodes: int, ports: list[int], shard: int) -> list[dict[str, Any]]:
    """One file_sd target per node: the port of its shard, its own path and instance label.

    Node ``i`` is served by shard ``i // shard`` on ``ports[i // shard]`` at
    ``/node/<i>/metrics``; ``instance`` names the node as a real fleet's targets would.
    """
    if len(ports) * shard < nodes:
        raise TrainguardError(f"{len(ports)} ports x {shard} nodes per shard < {nodes} nodes")
    return [{"targets": [f"127.0.0.1:{ports[node // shard]}"],
             "labels": {"__metrics_path__": f"/node/{node}/metrics",
                        "instance": f"node-{node:05d}:9400"}} for node in range(nodes)]


class FleetExporter:
    """``nodes`` dcgm-exporter targets, ``shard`` nodes per ``bench.dcgm_fleet`` process."""

    def __init__(self, nodes: int, shard: int = 2500) -> None:
        if nodes < 1 or shard < 1:
            raise TrainguardError(f"nodes={nodes} shard={shard}: both must be >= 1")
        self.nodes, self._shard = nodes, shard
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ports: list[int] = []

    def __enter__(self) -> FleetExporter:
        firsts = list(range(0, self.nodes, self._shard))
        self._ports = free_ports(len(firsts))
        try:
            for first, port in zip(firsts, self._ports, strict=True):
                count = min(self._shard, self.nodes - first)
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.dcgm_fleet", "--port", str(port),
                     "--first", str(first), "--count", str(count)],
                    preexec_fn=_die_with_parent))
            for first, port, proc in zip(firsts, self._ports, self._procs, strict=True):
                url = f"http://127.0.0.1:{port}/node/{first}/metrics"
                _wait(f"fleet exporter on port {port}", lambda u=url: bool(_get(u)), 30, proc)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus file_sd groups for the running shards (see :func:`file_sd_groups`)."""
        return file_sd_groups(self.nodes, self._ports, self._shard)

    def cpu(self) -> float:
        """CPU seconds of all exporter shards so far."""
        return sum(proc_cpu_seconds(p.pid) for p in self._procs)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in self._procs:
            _stop(proc, "dcgm_fleet")
        self._procs.clear()


def prometheus_config(targets_file: Path, interval_s: float = 1.0) -> str:
    """The scrape config: one job reading file_sd ``targets_file``, every ``interval_s``."""
    every = f"{round(interval_s * 1000)}ms"
    return (f"global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n"
            f"  evaluation_interval: 1m\nscrape_configs:\n  - job_name: dcgm\n"
            f"    file_sd_configs:\n      - files: ['{targets_file}']\n")


class PrometheusProcess:
    """Prometheus on a free 127.0.0.1 port with its config and TSDB under ``work``."""

    def __init__(self, binary: str, work: Path, targets: list[dict[str, Any]]) -> None:
        if not Path(binary).exists():
            raise TrainguardError(f"prometheus binary {binary!r} not found; `make prometheus` "
                                  f"installs Debian's package, or pass --prometheus PATH")
        self._binary, self._work, self._targets = binary, work, targets
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> PrometheusProcess:
        self._work.mkdir(parents=True, exist_ok=True)
        targets_file = self._work / "targets.json"
        targets_file.write_text(json.dumps(self._targets))
        config = self._work / "prometheus.yml"
        config.write_text(prometheus_config(targets_file))
        port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{port}"
        log_file = self._work / "prometheus.log"
        with log_file.open("wb") as out:
            self._proc = subprocess.Popen(
                [self._binary, f"--config.file={config}",
                 f"--storage.tsdb.path={self._work / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                 "--storage.tsdb.retention.time=1h"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            _wait("prometheus", lambda: bool(_get(f"{self.url}/-/ready")), 60, self._proc,
                  log_file)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def pid(self) -> int:
        """Prometheus's process id."""
        if self._proc is None:
            raise TrainguardError("prometheus is not running")
        return self._proc.pid

    def cpu(self) -> float:
        """Prometheus's own CPU seconds so far (all its threads)."""
        return proc_cpu_seconds(self.pid)

    def query(self, expr: str, at: float | None = None) -> float:
        """An instant PromQL query's scalar value at unix time ``at`` (0 when empty)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        body = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params))
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def self_metrics(self) -> dict[str, float]:
        """Prometheus's own /metrics, each sample name summed over its label sets."""
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(_get(f"{self.url}/metrics").decode()):
            for s in family.samples:
                out[s.name] = out.get(s.name, 0.0) + float(s.value)
        return out

    def wait_all_scraped(self, nodes: int, timeout: float) -> None:
        """Block until every one of ``nodes`` targets has been scraped at least once."""
        _wait(f"prometheus scraping {nodes} targets",
              lambda: self.query("count(up)") >= nodes, timeout, self._proc)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            _stop(self._proc, "prometheus")
            self._proc = None
