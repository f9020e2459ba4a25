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
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trainguard.agents.sim import Expectation, JobSimulator, JobSpec, list_scenarios, make_scenario
from trainguard.errors import ConfigError, TrainguardError
from trainguard.evaluation.scorecard import RunResult, markdown_table, score_run, summarize
from trainguard.evaluation.sweep import Variant

if TYPE_CHECKING:
    from trainguard.agents.transport import KafkaTransport
    from trainguard.local.stack import LocalStack

__all__ = ["EvalOptions", "EvalReport", "latency_line", "run_eval"]

_T0 = 1_800_000_000.0  # event time of every job's first tick


@dataclass(frozen=True)
class EvalOptions:
    """What to run; validated on construction."""

    data_dir: Path
    scenarios: tuple[str, ...] = ()  # empty: all (unless variants are given)
    #: Scenarios with parameters set (size sweeps), run beside ``scenarios``.
    variants: tuple[Variant, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    ticks: int = 330
    nodes: int = 4
    gpus: int = 4
    #: Ticks of every job per wall-clock second (the worker must keep up for honest latency).
    speed: float = 2.0
    bootstrap: str | None = None
    #: The player waits whenever the worker has more than this many ticks of every job's
    #: sample batches not yet stored (0: never): a worker that falls behind consumes its
    #: topics unevenly, and event-time checks then see one topic's time run ahead of
    #: another's (heartbeats behind samples: agent_silent). Speed is at most ``speed``.
    max_lag_ticks: int = 20
    #: None: any two free ports (evals of several worktrees may run side by side).
    kafka_port: int | None = None

    def __post_init__(self) -> None:
        known = list_scenarios()
        unknown = [s for s in (*self.scenarios, *(v.scenario for v in self.variants))
                   if s not in known]
        if unknown:
            raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}; expected: "
                              f"{', '.join(known)}")
        if not self.seeds:
            raise ConfigError("at least one seed is needed")
        if not 160 <= self.ticks <= 100_000:
            raise ConfigError(f"ticks must be within 160..100000 (faults start at 150), "
                              f"got {self.ticks}")
        if self.max_lag_ticks < 0:
            raise ConfigError(f"max_lag_ticks must be >= 0, got {self.max_lag_ticks}")
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
    #: Every finding row read back (``job_id``, ``check``, ``category``, times, blame).
    findings: list[dict[str, object]] = field(default_factory=list)

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
    plain = opts.scenarios or (() if opts.variants else tuple(list_scenarios()))
    variants = [Variant(name, name) for name in plain] + list(opts.variants)
    runs = []
    for v in variants:
        for seed in opts.seeds:
            job = f"{v.label}-s{seed}"
            spec = JobSpec(job_id=job, cluster="eval", nodes=opts.nodes,
                           gpus_per_node=opts.gpus, node_prefix=f"{prefix}-{job}")
            scenario = make_scenario(v.scenario, spec, seed=seed, **dict(v.params))
            sim = JobSimulator(spec, scenario, seed=seed, start_ts=_T0)
            runs.append(_Run(v.label, scenario.kind, seed, scenario.expected(), sim))
    return runs


def _clock_window(ticks: int) -> list[str]:
    """Worker flags that let simulated event time (from ``_T0``) pass its ingest window."""
    ahead = max(0.0, _T0 + ticks - time.time())
    behind = max(0.0, time.time() - _T0)
    return ["--max-future-s", f"{ahead + 600:.0f}", "--max-past-s", f"{behind + 7 * 86400:.0f}"]


def run_eval(opts: EvalOptions, out: Callable[[str], None] = print) -> EvalReport:
    """Run every (scenario, seed) through the pipeline and score what it found."""
    from trainguard.agents.config import KafkaProducerSettings
    from trainguard.agents.transport import KafkaTransport
    from trainguard.local.stack import LocalStack

    run_id = uuid.uuid4().hex[:6]
    stack = LocalStack(opts.data_dir / f"eval-{run_id}", bootstrap=opts.bootstrap or "",
                       kafka_port=opts.kafka_port, topic_prefix=f"eval{run_id}",
                       batch_within=0.2, worker_args=_clock_window(opts.ticks),
                       out=lambda line: out(f"[eval] {line}"))
    transport: KafkaTransport | None = None
    try:
        stack.start()
        runs = _runs(opts, run_id)
        out(f"[eval] {len(runs)} jobs ({len({r.scenario for r in runs})} scenario variants × "
            f"{len(opts.seeds)} seeds), {opts.nodes} nodes × {opts.gpus} GPUs each, "
            f"{opts.ticks} ticks at {opts.speed:g} ticks/s")
        transport = KafkaTransport(KafkaProducerSettings(bootstrap=stack.bootstrap))
        started = time.monotonic()
        produced, sample_batches, tick_wall = _play(opts, runs, stack, transport, out)
        transport.close(timeout=60)
        transport = None
        _wait_stored(stack, sample_batches, out)
        time.sleep(3.0)  # let the last findings land
        rows = stack.store.query(
            "SELECT job_id, check, category, toFloat64(first_seen) AS first_seen, "
            "toFloat64(ts) AS ts, toFloat64(last_seen) AS last_seen, ranks, nodes, "
            "toFloat64(ingested_at) AS ingested_at "
            "FROM {database}.findings FINAL WHERE cluster = 'eval'").dicts()
        report = _score(runs, rows, tick_wall)
        report.produced, report.seconds = produced, time.monotonic() - started
        report.findings = rows
        return report
    finally:
        if transport is not None:
            transport.close(timeout=5)
        stack.close()


def _play(
    opts: EvalOptions, runs: Sequence[_Run], stack: LocalStack, transport: KafkaTransport,
    out: Callable[[str], None],
) -> tuple[int, int, dict[int, float]]:
    """Tick every job up to ``opts.speed`` times a second, never far ahead of the worker.

    Returns the messages produced, the sample batches among them and each tick's wall time.
    """
    from trainguard.schemas.codec import encode

    topics = stack.topics
    names = {"samples": topics.samples, "steps": topics.steps, "heartbeats": topics.heartbeats}
    tick_wall: dict[int, float] = {}
    produced = sample_batches = 0
    started = first = time.monotonic()
    waited = 0.0
    for t in range(opts.ticks):
        for run in runs:
            for emit in run.sim.tick():
                transport.send(names[emit.topic], emit.key, encode(emit.record))
                produced += 1
                sample_batches += emit.topic == "samples"
        tick_wall[t] = time.time()
        if t % 50 == 0:
            stack.worker.check_alive()
            out(f"[eval] tick {t:>5}/{opts.ticks}  messages {produced:>8}")
        if opts.max_lag_ticks and t % 5 == 4:
            pause = _keep_up(stack, transport, sample_batches,
                             opts.max_lag_ticks * sample_batches // (t + 1))
            started += pause  # a pause moves the schedule: no burst to catch up after it
            waited += pause
        time.sleep(max(0.0, started + (t + 1) / opts.speed - time.monotonic()))
    elapsed = time.monotonic() - first
    out(f"[eval] played {opts.ticks} ticks at {opts.ticks / elapsed:.2f} ticks/s (asked "
        f"{opts.speed:g}); {waited:.0f} s waiting for the worker to keep up")
    return produced, sample_batches, tick_wall


def _keep_up(stack: LocalStack, transport: KafkaTransport, produced: int, allowed: int,
             stall_s: float = 300.0) -> float:
    """Wait until at most ``allowed`` of ``produced`` sample batches are unstored; seconds."""
    began = last_change = time.monotonic()
    stored = -1
    while True:
        now_stored = stack.worker.scalar("SELECT count() FROM {database}.sample_batches FINAL")
        if produced - now_stored <= allowed:
            return time.monotonic() - began
        if now_stored != stored:
            stored, last_change = now_stored, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            raise TrainguardError(f"worker stored {stored} of {produced} sample batches and "
                                  f"no more in {stall_s:.0f} s")
        stack.worker.check_alive()
        transport.flush(timeout=1.0)
        time.sleep(0.25)


def _wait_stored(stack: LocalStack, sample_batches: int, out: Callable[[str], None],
                 stall_s: float = 300.0) -> None:
    """Wait until the worker stored every sample batch, however long it takes.

    A long run played fast leaves the worker a backlog; waiting goes on while it makes
    progress and raises after ``stall_s`` seconds without any.
    """
    stored, last_change, said = -1, time.monotonic(), time.monotonic()
    while True:
        stack.worker.check_alive()
        # Sample batches, not steps: a restarted job repeats step numbers, and the steps
        # table keeps one row per (job, step, rank).
        now_stored = stack.worker.scalar("SELECT count() FROM {database}.sample_batches FINAL")
        if now_stored >= sample_batches:
            return
        if now_stored != stored:
            stored, last_change = now_stored, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            raise TrainguardError(f"worker stored {stored} of {sample_batches} sample "
                                  f"batches and no more in {stall_s:.0f} s")
        if time.monotonic() - said > 30:
            said = time.monotonic()
            out(f"[eval] waiting for the worker: {stored}/{sample_batches} sample batches "
                "stored")
        time.sleep(1.0)


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
