"""What ``StepReporter.report()`` costs a training step, with and without an agent.

The agent (a :class:`StepIntake` draining every 10 ms, like an agent tick) runs in its
own process, as on a real node. Three loops, each in this process:

* tight: ``report()`` back to back, N calls per round; median over rounds of the mean.
  The agent cannot keep up with this, so many calls take the "queue full" path;
  the share handed over is printed.
* paced: one ``report()`` per ~``--gap-us`` of busy "training", each call timed alone;
  the agent keeps up, so this is the realistic cost (p50 and p99 per call).
* no agent: nothing listens on the socket path.

    python -m bench.reporter --calls 200000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from trainguard.agents.intake import StepIntake, kernel_dgram_qlen
from trainguard.agents.reporter import StepReporter


def serve(path: Path) -> None:
    """Agent side: receive and drain until SIGTERM, then print the counters as JSON."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    intake = StepIntake(path, max_queue=10_000_000)
    intake.start()
    drained = 0
    while not stop.wait(0.01):
        drained += len(intake.drain())
    drained += len(intake.drain())
    intake.stop()
    print(json.dumps({**intake.counts(), "drained": drained}), flush=True)


def start_agent(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.reporter", "--serve", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("agent process did not start")
        time.sleep(0.01)
    return proc


def stop_agent(proc: subprocess.Popen[str]) -> dict[str, int]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return counts


def tight_us(reporter: StepReporter, calls: int, rounds: int) -> float:
    """Median over rounds of the mean µs per call, back to back."""
    means = []
    report = reporter.report
    for _ in range(rounds):
        t0 = time.perf_counter()
        for step in range(calls):
            report(step, loss=2.5, grad_norm=1.1, lr=3e-4, step_time_s=0.5, tokens_per_s=5e5)
        means.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(means)


def paced_us(reporter: StepReporter, calls: int, gap_us: float) -> list[float]:
    """Per-call µs of ``report()`` with ``gap_us`` of busy work between calls."""
    times = []
    report = reporter.report
    clock = time.perf_counter_ns
    gap_ns = int(gap_us * 1000)
    for step in range(calls):
        until = clock() + gap_ns
        while clock() < until:  # the "training step": busy, as a GPU-feeding loop is
            pass
        t0 = clock()
        report(step, loss=2.5, grad_norm=1.1, lr=3e-4, step_time_s=0.5, tokens_per_s=5e5)
        times.append((clock() - t0) / 1000)
    return times


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per tight round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paced-calls", type=int, default=10_000)
    parser.add_argument("--gap-us", type=float, default=500.0, help="busy work between calls")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="# %(levelname)s %(name)s: %(message)s")
    if args.serve:
        serve(args.serve)
        return

    work = Path(tempfile.mkdtemp(prefix="tgb", dir="/tmp"))
    path = work / "steps.sock"
    try:
        agent = start_agent(path)
        try:
            reporter = StepReporter("bench", 0, 8, socket_path=str(path), node="bench")
            listening = tight_us(reporter, args.calls, args.rounds)
            handed = reporter.sent / (reporter.sent + reporter.dropped)
            tight_sample = paced_us(reporter, args.paced_calls, 0.0)
            time.sleep(0.1)  # let the agent empty the queue the flood left behind
            sent0, dropped0 = reporter.sent, reporter.dropped
            paced = paced_us(reporter, args.paced_calls, args.gap_us)
            paced_dropped = reporter.dropped - dropped0
            paced_sent = reporter.sent - sent0
        finally:
            counts = stop_agent(agent)
        absent = StepReporter("bench", 0, 8, socket_path=str(work / "none.sock"), node="bench")
        no_agent = tight_us(absent, args.calls, args.rounds)
        absent_sample = paced_us(absent, args.paced_calls, 0.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, net.unix.max_dgram_qlen={kernel_dgram_qlen()}, "
        f"{args.rounds} rounds x {args.calls} calls"
    )
    print(
        f"reporter.report(): median {listening:.2f} µs/call (agent listening, tight loop, "
        f"{handed:.0%} handed over), {no_agent:.2f} µs/call (no agent)"
    )
    print(
        f"  tight loop, per call: p50 {p(tight_sample, 0.5):.2f} µs, "
        f"p99 {p(tight_sample, 0.99):.2f} µs (agent listening); "
        f"p50 {p(absent_sample, 0.5):.2f} µs, p99 {p(absent_sample, 0.99):.2f} µs (no agent)"
    )
    print(
        f"  paced ({args.gap_us:.0f} µs of work between calls, agent keeping up): "
        f"p50 {p(paced, 0.5):.2f} µs, p99 {p(paced, 0.99):.2f} µs, "
        f"max {max(paced):.1f} µs; {paced_sent} handed over, {paced_dropped} dropped"
    )
    print(
        f"  agent side: {counts['steps_received']} received, {counts['drained']} drained, "
        f"{counts['datagrams_dropped']} client drops reported, "
        f"{counts['steps_malformed']} malformed"
    )
    print("  (per-call figures include ~0.05 µs of perf_counter_ns overhead)")


if __name__ == "__main__":
    main()
