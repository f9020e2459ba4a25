"""``trainguard eval``: every scenario through the real pipeline, scored against ground truth.

One local Kafka broker (or ``--bootstrap``), one real stream worker process with its own
embedded store, and one simulated training job per (scenario, seed), all running side by
side in event time: a tick of every job is produced, then the next, ``speed`` ticks per
wall-clock second. When every sample batch is stored, the findings the worker wrote are
read back and scored (:mod:`trainguard.evaluation.scorecard`). Time to detect is event time; the
wall-clock latency from producing a tick to its finding row landing is reported apart.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainguard.agents.sim import Expectation, JobSimulator, JobSpec, list_scenarios, make_scenario
from trainguard.errors import ConfigError, TrainguardError
from trainguard.evaluation.scorecard import RunResult, markdown_table, score_run, summarize
from trainguard.local.broker import LocalBroker, free_port, port_free

__all__ = ["EvalOptions", "EvalReport", "latency_line", "run_eval"]

_T0 = 1_800_000_000.0  # event time of every job's first tick


@dataclass(frozen=True)
class EvalOptions:
    """What to run; validated on construction."""

    data_dir: Path
    scenarios: tuple[str, ...] = ()  # empty: all
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    ticks: int = 330
    nodes: int = 4
    gpus: int = 4
    #: Ticks of every job per wall-clock second (the worker must keep up for honest latency).
    speed: float = 2.0
    bootstrap: str | None = None
    kafka_port: int = 9092

    def __post_init__(self) -> None:
        known = list_scenarios()
        unknown = [s for s in self.scenarios if s not in known]
        if unknown:
            raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}; expected: "
                              f"{', '.join(known)}")
        if not self.seeds:
            raise ConfigError("at least one seed is needed")
        if not 160 <= self.ticks <= 100_000:
            raise ConfigError(f"ticks must be within 160..100000 (faults start at 150), "
                              f"got {self.ticks}")
        if not 0.1 <= self.speed <= 1000:
            raise ConfigError(f"speed must be within 0.1..1000 ticks/s, got {self.speed}")


@dataclass
class EvalReport:
    """Per-run verdicts, the scorecard table and the wall-clock latencies."""

    results: list[RunResult]
    table: str
    wall_latency_s: list[float] = field(default_factory=list)
    produced: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Every scenario passed (see :attr:`ScenarioSummary.passed`)."""
        return all(s.passed for s in summarize(self.results))


@dataclass
class _Run:
    scenario: str
    kind: str
    seed: int
    expected: Expectation
    sim: JobSimulator


def _runs(opts: EvalOptions, prefix: str) -> list[_Run]:
    runs = []
    for name in opts.scenarios or tuple(list_scenarios()):
        for seed in opts.seeds:
            job = f"{name}-s{seed}"
            spec = JobSpec(job_id=job, cluster="eval", nodes=opts.nodes,
                           gpus_per_node=opts.gpus, node_prefix=f"{prefix}-{job}")
            scenario = make_scenario(name, spec, seed=seed)
            sim = JobSimulator(spec, scenario, seed=seed, start_ts=_T0)
            runs.append(_Run(name, scenario.kind, seed, scenario.expected(), sim))
    return runs


def run_eval(opts: EvalOptions, out: Callable[[str], None] = print) -> EvalReport:
    """Run every (scenario, seed) through the pipeline and score what it found."""
    from trainguard.agents.config import KafkaProducerSettings
    from trainguard.agents.transport import KafkaTransport
    from trainguard.local.worker import check_alive, start_worker, stop_worker, wait_for_store
    from trainguard.pipeline.kafka_admin import ensure_topics
    from trainguard.schemas.codec import encode
    from trainguard.schemas.topics import Topics

    data_dir = opts.data_dir.resolve()
    run_id = uuid.uuid4().hex[:6]
    work = data_dir / f"eval-{run_id}"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    store_raw = f"chdb://{work / 'store'}"
    topics = Topics(f"eval{run_id}")
    worker_log = work / "logs" / "worker.log"
    broker: LocalBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    transport: KafkaTransport | None = None
    try:
        bootstrap = opts.bootstrap
        if not bootstrap:
            port = opts.kafka_port if port_free(opts.kafka_port) else free_port()
            broker = LocalBroker(work / "kafka", port=port)
            out(f"[eval] starting local Kafka {broker.bootstrap}")
            broker.start()
            bootstrap = broker.bootstrap
        ensure_topics(bootstrap, topics.all(), partitions=3, replication_factor=1)
        out(f"[eval] starting stream worker → {store_raw} (log: {worker_log})")
        worker = start_worker(bootstrap, store_raw, topics.prefix, work, worker_log)
        from trainguard.pipeline.store import StoreUrl

        store = wait_for_store(StoreUrl.parse(store_raw), worker, worker_log)
        runs = _runs(opts, run_id)
        out(f"[eval] {len(runs)} jobs ({len({r.scenario for r in runs})} scenarios × "
            f"{len(opts.seeds)} seeds), {opts.nodes} nodes × {opts.gpus} GPUs each, "
            f"{opts.ticks} ticks at {opts.speed:g} ticks/s")
        transport = KafkaTransport(KafkaProducerSettings(bootstrap=bootstrap))
        names = {"samples": topics.samples, "steps": topics.steps,
             "heartbeats": topics.heartbeats}
        tick_wall: dict[int, float] = {}
        produced = sample_batches = 0
        started = time.monotonic()
        for t in range(opts.ticks):
            for run in runs:
                for emit in run.sim.tick():
                    transport.send(names[emit.topic], emit.key, encode(emit.record))
                    produced += 1
                    sample_batches += emit.topic == "samples"
            tick_wall[t] = time.time()
            if t % 50 == 0:
                check_alive(worker, worker_log)
                out(f"[eval] tick {t:>5}/{opts.ticks}  messages {produced:>8}")
            time.sleep(max(0.0, started + (t + 1) / opts.speed - time.monotonic()))
        transport.close(timeout=60)
        transport = None
        deadline = time.monotonic() + 600
        stored = 0
        while time.monotonic() < deadline:
            check_alive(worker, worker_log)
            # Sample batches, not steps: a restarted job repeats step numbers, and the steps
            # table keeps one row per (job, step, rank).
            stored = int(store.query(
                "SELECT count() FROM {database}.sample_batches FINAL").scalar())
            if stored >= sample_batches:
                break
            time.sleep(1.0)
        if stored < sample_batches:
            raise TrainguardError(f"worker stored {stored} of {sample_batches} sample batches")
        time.sleep(3.0)  # let the last findings land
        rows = store.query(
            "SELECT job_id, check, category, toFloat64(first_seen) AS first_seen, "
            "toFloat64(ts) AS ts, toFloat64(last_seen) AS last_seen, ranks, nodes, "
            "toFloat64(ingested_at) AS ingested_at "
            "FROM {database}.findings FINAL WHERE cluster = 'eval'").dicts()
        report = _score(runs, rows, tick_wall)
        report.produced, report.seconds = produced, time.monotonic() - started
        return report
    finally:
        if transport is not None:
            transport.close(timeout=5)
        if worker is not None:
            stop_worker(worker)
        if broker is not None:
            broker.stop()


def _score(runs: Sequence[_Run], rows: list[dict[str, object]],
           tick_wall: dict[int, float]) -> EvalReport:
    by_job: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_job.setdefault(str(row["job_id"]), []).append(row)
    results = []
    latency = []
    for run in runs:
        found = by_job.get(run.sim.spec.job_id, [])
        result = score_run(run.scenario, run.kind, run.seed, run.expected, found)
        results.append(result)
        if result.detected:
            first = min((r for r in found if r["check"] in run.expected.checks),
                        key=lambda r: float(str(r["ts"])))
            # The stored row is the finding's latest emission (a persisting fault repeats):
            # pair its ingestion with the tick of that emission, ``last_seen``.
            wall = tick_wall.get(round(float(str(first["last_seen"])) - _T0))
            if wall is not None:
                latency.append(float(str(first["ingested_at"])) - wall)
    return EvalReport(results, markdown_table(summarize(results)), latency)


def latency_line(report: EvalReport) -> str:
    """Wall-clock latency from a tick being produced to its finding row, p50 and max."""
    lat = sorted(report.wall_latency_s)
    if not lat:
        return "no detections, no latency"
    return (f"tick produced → finding row stored: p50 {statistics.median(lat):.2f} s, "
            f"max {lat[-1]:.2f} s over {len(lat)} detections")
