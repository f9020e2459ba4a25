"""Agent footprint: CPU (% of one core) and peak RSS of ``trainguard agent`` at 1 Hz and 10 Hz.

Runs the real daemon process (simulated backend, 8 GPUs, spool and step socket on,
sending to a local broker), lets it warm up, then reads its CPU time from
``/proc/PID/stat`` over a steady-state window and its peak RSS (VmHWM) at the end.
Optionally ranks report steps into its socket from another process at the tick rate.

    python -m bench.agent --seconds 60 --rates 1 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procstat import proc_cpu_seconds
from trainguard.local.broker import LocalBroker, free_ports


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(bootstrap: str, work: Path, hz: float, seconds: float, warmup: float = 5.0,
            ranks: int = 0) -> tuple[float, int]:
    sock = Path(tempfile.mkdtemp(prefix="tgb-", dir="/tmp")) / "s.sock"
    cmd = [sys.executable, "-m", "trainguard.cli", "--log-level", "WARNING", "agent",
           "--backend", "simulated", "--sim-gpus", "8", "--interval", str(1 / hz),
           "--bootstrap", bootstrap, "--spool-dir", str(work / f"spool-{hz}-{time.time()}"),
           "--steps-socket", str(sock), "--topic-prefix", "bench"]
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reporter = None
    try:
        time.sleep(warmup)
        if ranks:
            code = (
                "import sys, time\n"
                "from trainguard.agents.reporter import StepReporter\n"
                f"rs = [StepReporter('bench', r, {ranks}, socket_path={str(sock)!r}) "
                f"for r in range({ranks})]\n"
                "step = 0\n"
                "while True:\n"
                "    for r in rs: r.report(step, loss=1.0, grad_norm=1.0, lr=1e-4)\n"
                f"    step += 1; time.sleep({1 / hz})\n"
            )
            reporter = subprocess.Popen([sys.executable, "-c", code])
        c0, t0 = proc_cpu_seconds(agent.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = proc_cpu_seconds(agent.pid), time.monotonic()
        peak = _vm(agent.pid, "VmHWM")
        return 100.0 * (c1 - c0) / (t1 - t0), peak
    finally:
        if reporter is not None:
            reporter.kill()
        agent.terminate()
        agent.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--rates", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ranks", type=int, default=8, help="ranks reporting steps at the tick rate")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-agent-bench-") as tmp:
        work = Path(tmp)
        port, cport = free_ports(2)
        with LocalBroker(work / "kafka", port, cport) as broker:
            for hz in args.rates:
                runs = [measure(broker.bootstrap, work, hz, args.seconds, ranks=args.ranks)
                        for _ in range(args.rounds)]
                cpu = [r[0] for r in runs]
                rss = [r[1] for r in runs]
                print(f"8 GPUs x {hz:g} Hz, {args.ranks} ranks reporting: CPU median "
                      f"{statistics.median(cpu):.2f}% of one core "
                      f"(runs: {', '.join(f'{c:.2f}' for c in cpu)}); peak RSS median "
                      f"{statistics.median(rss) / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
