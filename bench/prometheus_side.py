"""Prometheus side by side: its CPU per 1,000 GPU samples scraping a dcgm-exporter fleet.

For each ``--nodes`` count: a dcgm-exporter-shaped fleet (:mod:`bench.dcgm_fleet`, N nodes ×
8 GPUs × 26 default DCGM fields, one scrape target per node) and Debian's Prometheus
(``/usr/bin/prometheus``, 2.42) with its own config, a temporary TSDB and a free port on
127.0.0.1, scraping every target every second. After the warm-up (every target scraped, then
``--warmup`` seconds more so that series creation is over), Prometheus's own CPU
(utime + stime of its process from ``/proc/<pid>/stat``) is read over ``--seconds``. The
exporter's CPU is not counted (shown for information).

The unit is the one ``bench.pipeline realtime`` reports for the trainguard worker: CPU over
the window divided by the GPU samples offered in it (nodes × 8 GPUs × seconds at 1 Hz), where
one GPU sample is one GPU's scrape of the default counter set here and one GPU's record in a
sample batch there. Also reported: the share of scheduled scrapes that ran and succeeded
(``up``), the same CPU per 1,000 GPU samples actually ingested (a Prometheus that misses
scrapes does less work: read both columns), scrape duration, samples appended to the head
per second (want: 26 × 8 + 5 per node per second) and sample-limit hits.

    python -m bench.prometheus_side --nodes 500 2500 5000 --seconds 60
    python -m bench.prometheus_side --nodes 500 1000 --seconds 60 --worker   # then trainguard

With ``--worker`` the trainguard worker runs right after on the same node counts
(``bench.pipeline realtime``: a local Kafka broker, its 40 s warm-up, then ``--seconds``
measured), and the table shows both figures and their ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.dcgm_fleet import COUNTERS, GPUS
from bench.prom_runner import (
    PROMETHEUS_BIN,
    FleetExporter,
    PrometheusProcess,
)

__all__ = ["measure", "main"]

# up, scrape_duration_seconds, scrape_samples_scraped, ..._post_metric_relabeling, series_added
_SYNTHETIC = 5


def measure(nodes: int, seconds: int, warmup: int, work: Path,
            prometheus: str = PROMETHEUS_BIN, shard: int = 2500) -> dict[str, float]:
    """Scrape ``nodes`` targets at 1 Hz; return Prometheus's figures over ``seconds``."""
    with ExitStack() as stack:
        fleet = stack.enter_context(FleetExporter(nodes, shard=shard))
        prom = stack.enter_context(PrometheusProcess(prometheus, work, fleet.targets()))
        prom.wait_all_scraped(nodes, timeout=60 + nodes / 100)
        time.sleep(warmup)
        m0, cpu0, ex0, wall0 = prom.self_metrics(), prom.cpu(), fleet.cpu(), time.monotonic()
        end_at = wall0 + seconds
        while (left := end_at - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
        cpu1, ex1, wall1, at = prom.cpu(), fleet.cpu(), time.monotonic(), time.time()
        m1 = prom.self_metrics()
        w = f"{round(wall1 - wall0)}s"  # every query over the same window, ending at `at`
        up_sum = prom.query(f"sum(sum_over_time(up[{w}]))", at)
        up_count = prom.query(f"sum(count_over_time(up[{w}]))", at)
        dur_avg = prom.query(f"avg(avg_over_time(scrape_duration_seconds[{w}]))", at)
        dur_max = prom.query(f"max(max_over_time(scrape_duration_seconds[{w}]))", at)
    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    scheduled = nodes * wall  # one scrape per target per second
    d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
    return {
        "nodes": nodes, "seconds": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
        "cpu_ms_per_1000": 1e6 * cpu / (nodes * GPUS * wall),
        "scrapes_run": d["prometheus_target_interval_length_seconds_count"] / scheduled,
        "scrape_success": up_sum / up_count if up_count else 0.0,
        # the same CPU over the GPU samples actually ingested (successful scrapes only)
        "cpu_ms_per_1000_ok": 1e6 * (cpu / wall) / max(1.0, GPUS * up_sum / round(wall)),
        "scrape_avg_ms": 1000 * dur_avg, "scrape_max_ms": 1000 * dur_max,
        "samples_per_s": d["prometheus_tsdb_head_samples_appended_total"] / wall,
        "want_samples_per_s": nodes * (len(COUNTERS) * GPUS + _SYNTHETIC),
        "sample_limit_hits": d.get("prometheus_target_scrapes_exceeded_sample_limit_total", 0),
        "rss_mb": m1.get("process_resident_memory_bytes", 0.0) / 2**20,
        "exporter_cpu_pct": 100 * (ex1 - ex0) / wall,
    }


def _worker(nodes: list[int], seconds: int, work: Path) -> dict[int, dict[str, float]]:
    """``bench.pipeline realtime`` for each node count: its warm-up, then ``seconds``."""
    from bench import pipeline
    from trainguard.local.broker import LocalBroker, free_ports

    port, cport = free_ports(2)
    out: dict[int, dict[str, float]] = {}
    with LocalBroker(work / "kafka", port, cport) as broker:
        for n in nodes:
            r = pipeline.realtime(broker.bootstrap, work, n, seconds + pipeline._WARMUP_TICKS)
            pipeline._print_realtime(r)
            out[n] = r
    return out


def _behind(w: dict[str, float]) -> str:
    """A note when the worker did not keep up: its CPU then covers fewer samples than offered.

    One tick in flight (2 messages per node) is normal at the end of the window.
    """
    late = w["end_lag_msgs"] - 2 * w["nodes"]
    return f" (fell behind: {w['end_lag_msgs']:,.0f} messages unstored)" if late > 0 else ""


def _table(prom: list[dict[str, float]], worker: dict[int, dict[str, float]]) -> str:
    head = ("| nodes | GPU samples/s | Prometheus CPU | ms per 1,000 GPU samples | scrapes run "
            "| up | per 1,000 ingested | scrape avg / max ms | samples appended/s (want) "
            "| exporter CPU (not counted)")
    rule = "|---|---|---|---|---|---|---|---|---|---"
    if worker:
        head += " | trainguard worker CPU | ms per 1,000 | ratio trainguard / Prometheus"
        rule += "|---|---|---"
    rows = [head + " |", rule + "|"]
    for r in prom:
        n = int(r["nodes"])
        row = (f"| {n:,} | {n * GPUS:,} | {r['cpu_pct']:.0f} % | **{r['cpu_ms_per_1000']:.1f}** | "
               f"{100 * r['scrapes_run']:.1f} % | {100 * r['scrape_success']:.1f} % | "
               f"{r['cpu_ms_per_1000_ok']:.1f} | "
               f"{r['scrape_avg_ms']:.1f} / {r['scrape_max_ms']:.0f} | "
               f"{r['samples_per_s']:,.0f} ({r['want_samples_per_s']:,.0f}) | "
               f"{r['exporter_cpu_pct']:.0f} %")
        if n in worker:
            w = worker[n]
            ratio = f"{w['cpu_ms_per_1000'] / r['cpu_ms_per_1000']:.2f}"
            row += (f" | {w['cpu_pct']:.0f} % | **{w['cpu_ms_per_1000']:.1f}**{_behind(w)} | "
                    f"{'– (not comparable)' if _behind(w) else ratio}")
        rows.append(row + " |")
    return "\n".join(rows)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[500, 2500, 5000])
    p.add_argument("--seconds", type=int, default=60, help="measurement window (default 60)")
    p.add_argument("--warmup", type=int, default=20,
                   help="seconds after every target's first scrape (default 20)")
    p.add_argument("--rounds", type=int, default=1, help="runs per node count (median)")
    p.add_argument("--shard", type=int, default=2500, help="nodes per exporter process")
    p.add_argument("--prometheus", default=os.environ.get("PROMETHEUS_BIN", PROMETHEUS_BIN),
                   help="Prometheus binary (env PROMETHEUS_BIN; default %(default)s)")
    p.add_argument("--worker", action="store_true",
                   help="then run the trainguard worker (bench.pipeline realtime) on the same "
                        "node counts")
    args = p.parse_args(argv)
    if args.seconds < 5 or min(args.nodes) < 1:
        p.error(f"--seconds {args.seconds} and --nodes {args.nodes}: need >= 5 s and >= 1 node")
    _stop_on_sigterm()
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="tg-prom-side-") as tmp:
        for n in args.nodes:
            runs = []
            for k in range(args.rounds):
                r = measure(n, args.seconds, args.warmup, Path(tmp) / f"prom-{n}-{k}",
                            args.prometheus, args.shard)
                print(f"prometheus {n} nodes: {r['cpu_pct']:.0f} % of a core = "
                      f"{r['cpu_ms_per_1000']:.1f} ms per 1,000 GPU samples, scrapes run "
                      f"{100 * r['scrapes_run']:.1f} %, up {100 * r['scrape_success']:.1f} %, "
                      f"{r['samples_per_s']:,.0f} samples/s appended, sample-limit hits "
                      f"{r['sample_limit_hits']:.0f}", flush=True)
                runs.append(r)
            results.append(min(runs, key=lambda x: abs(
                x["cpu_ms_per_1000"] - statistics.median(y["cpu_ms_per_1000"] for y in runs))))
        worker = _worker(args.nodes, args.seconds, Path(tmp)) if args.worker else {}
    print(_table(results, worker), flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
