"""The zero-configuration demo: local broker + embedded store + a simulated training job.

``trainguard demo`` starts a local Kafka broker (unless bootstrap servers are given), a
stream worker that owns the embedded store, and one simulated data-parallel training job
(``--nodes`` × ``--gpus`` ranks) running ``--speed`` times faster than real time. Half-way
it injects a sabotage scenario (``--scenario``, default ``weight_tamper``: one rank's
weights modified after a checkpoint load), so a newcomer watches trainguard flag it and
name the rank. The local broker is secured by default (SASL_SSL with SCRAM users, TLS
and ACLs: the simulated agents may only write telemetry, the worker alone writes
verdicts); ``--plain`` runs it without. It shows progress, waits until every batch is
stored, prints row counts and the findings, and stops everything it started, also on
Ctrl-C. Each run stamps its records with its own cluster name (``demo-<run id>``), so its
counts are exact even when the store already holds earlier runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainguard.agents.sim import DEFAULT_SCENARIO, JobSimulator, JobSpec, Scenario
from trainguard.agents.transport import KafkaTransport
from trainguard.demo.pages import DemoPager
from trainguard.demo.views import write_views
from trainguard.errors import ConfigError, TrainguardError
from trainguard.local.stack import LocalStack
from trainguard.local.worker import WorkerProcess
from trainguard.pipeline.store import Store, StoreUrl
from trainguard.schemas.auth import FleetSigner
from trainguard.schemas.codec import encode
from trainguard.schemas.records import Record
from trainguard.schemas.topics import Topics

__all__ = ["DEFAULT_SCENARIO", "DemoOptions", "run_demo"]

log = logging.getLogger(__name__)

#: Sends one record: (topic, key, record).
_Send = Callable[[str, bytes, Record], None]


#: Tables that carry the demo run's cluster name, and what each row is.
_TABLES = {
    "sample_batches": "node × tick",
    "gpu_samples": "GPU × tick",
    "steps": "rank × step; steps re-run after the restart count twice",
    "findings": "consistency finding",
}


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs against and for how long."""

    nodes: int = 4
    gpus: int = 8
    duration_s: int = 30
    #: Ticks (seconds of event time) per wall-clock second.
    speed: float = 10.0
    #: A scenario name (``trainguard demo --list-scenarios``) or ``None`` for a clean run.
    scenario: str | None = DEFAULT_SCENARIO
    data_dir: Path = Path("trainguard-data")
    bootstrap: str = ""
    store: str = ""
    topic_prefix: str = "tg"
    kafka_port: int = 9092
    #: Secure the local broker (SASL_SSL + ACLs); ignored with ``bootstrap`` (not ours).
    secure: bool = True
    #: Agents sign every message with their node's key; the worker refuses unsigned input.
    auth: bool = True

    def __post_init__(self) -> None:
        from trainguard.agents.sim import list_scenarios

        if self.nodes < 2 or self.gpus < 1 or self.duration_s < 1:
            raise ConfigError(f"--nodes must be >= 2, --gpus and --duration >= 1; got "
                              f"{self.nodes}, {self.gpus}, {self.duration_s}")
        if not 0.5 <= self.speed <= 200:
            raise ConfigError(f"--speed must be within 0.5..200, got {self.speed}")
        if self.scenario is not None and self.scenario not in list_scenarios():
            raise ConfigError(f"unknown scenario {self.scenario!r}; expected one of: "
                              f"{', '.join(list_scenarios())} (or none)")

    @property
    def ticks(self) -> int:
        """Seconds of event time the job runs."""
        return max(1, round(self.duration_s * self.speed))


def run_demo(opts: DemoOptions, out: Callable[[str], None] = print) -> int:
    """Run the demo; 0 when every batch was stored and an injected sabotage was named."""
    from trainguard.agents.config import KafkaProducerSettings
    from trainguard.agents.sim import JobSpec, make_scenario
    from trainguard.cli._common import store_url

    data_dir = opts.data_dir.resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    store_raw = opts.store or f"chdb://{data_dir / 'store'}"
    url: StoreUrl = store_url(store_raw)
    run_id = uuid.uuid4().hex[:8]
    cluster = f"demo-{run_id}"
    spec = JobSpec(job_id=f"train-{run_id}", cluster=cluster, nodes=opts.nodes,
                   gpus_per_node=opts.gpus, node_prefix=f"{cluster}-node")
    at = min(150, opts.ticks // 2)
    scenario = None
    if opts.scenario is not None:
        try:
            scenario = make_scenario(opts.scenario, spec, seed=int(run_id, 16) % 1000, at=at)
        except ValueError as exc:
            raise ConfigError(f"scenario {opts.scenario}: {exc}") from None
    stack = LocalStack(data_dir, bootstrap=opts.bootstrap, kafka_port=opts.kafka_port,
                       secure=opts.secure and not opts.bootstrap,
                       topic_prefix=opts.topic_prefix, store=store_raw,
                       store_password=url.password, pager="auto",
                       worker_config=lambda s: DemoPager.of(s).worker_config(),
                       batch_within=0.2, out=lambda line: out(f"[demo] {line}"),
                       # Accelerated: event time runs up to ``ticks`` s ahead of Kafka's.
                       worker_args=["--max-future-s", str(opts.ticks + 600)],
                       auth=opts.auth)
    transport: KafkaTransport | None = None
    try:
        stack.start()
        pager, store, worker, topics = DemoPager.of(stack), stack.store, stack.worker, stack.topics
        _plan_maintenance(store, spec, out)
        sim = JobSimulator(spec, scenario, seed=int(run_id, 16) % 1000, start_ts=time.time())
        transport = KafkaTransport(KafkaProducerSettings(bootstrap=stack.bootstrap,
                                                         security=stack.agent_security))
        story = (f"injecting {scenario.name} at t={scenario.at}s ({scenario.description})"
                 if scenario else "no scenario (a clean run)")
        out(f"[demo] run {run_id}: job {spec.job_id} on {opts.nodes} nodes × {opts.gpus} GPUs "
            f"= {spec.world_size} ranks, {opts.ticks} s of training at {opts.speed:g}× real "
            f"time; {story}")
        batches = _produce(sim, _sender(transport, stack.signer), topics, opts, store,
                           cluster, worker, out)
        transport.close(timeout=30)
        failed = transport.counters.failed
        transport = None
        if failed:
            raise TrainguardError(f"{failed} messages failed delivery to Kafka")
        stored = _wait_for_rows(store, cluster, batches, worker)
        time.sleep(2.0)  # the last steps close on the worker's timer
        counts = {t: _count(store, t, cluster) for t in _TABLES}
        out(f"[demo] done: {opts.ticks} ticks × {opts.nodes} nodes = {batches} sample batches")
        out(f"[demo] rows in {url} for cluster {cluster}:")
        for table, what in _TABLES.items():
            out(f"         {table:<18} {counts[table]:>8}   (one per {what})")
        named = _report_findings(store, cluster, scenario, out)
        _report_pages(pager, cluster, scenario, out)
        views_ok = write_views(store, data_dir, cluster=cluster, job_id=spec.job_id,
                               start=sim.start_ts, end=sim.start_ts + opts.ticks, out=out)
        out("[demo] look around: trainguard db query --store " + store_raw +
            " \"SELECT check, ranks, nodes, summary FROM {database}.findings FINAL\"")
        out(f"[demo]             trainguard alerts --all --store {store_raw}")
        return 0 if stored == batches and named and views_ok else 1
    except KeyboardInterrupt:
        out("[demo] interrupted; stopping what the demo started")
        raise
    finally:
        if transport is not None:
            transport.close(timeout=5)  # before the broker goes, or it retries noisily
        stack.close()


def _sender(transport: KafkaTransport, signer: FleetSigner | None) -> _Send:
    """Send a record's message, signed as its node when the stack requires it."""

    def send(topic: str, key: bytes, record: Record) -> None:
        value = encode(record)
        headers = (None if signer is None
                   else signer.headers(getattr(record, "node", ""), topic, key, value))
        transport.send(topic, key, value, headers)

    return send


def _produce(sim: JobSimulator, send: _Send, topics: Topics, opts: DemoOptions,
             store: Store, cluster: str, worker: WorkerProcess,
             out: Callable[[str], None]) -> int:
    """Tick the job at ``opts.speed`` ticks per second; return sample batches sent."""
    names = {"samples": topics.samples, "steps": topics.steps,
             "heartbeats": topics.heartbeats}
    batches = 0
    started = time.monotonic()
    every = max(1, round(5 * opts.speed))
    for t in range(1, opts.ticks + 1):
        for emit in sim.tick():
            send(names[emit.topic], emit.key, emit.record)
            batches += emit.topic == "samples"
        if t % every == 0 or t == opts.ticks:
            worker.check_alive()
            stored = _count(store, "sample_batches", cluster)
            found = _count(store, "findings", cluster)
            out(f"[demo] t={t:>5}s  batches sent {batches:>6}  stored {stored:>6}  "
                f"findings {found:>3}")
        time.sleep(max(0.0, started + t / opts.speed - time.monotonic()))
    return batches


def _report_findings(store: Store, cluster: str, scenario: Scenario | None,
                     out: Callable[[str], None]) -> bool:
    """Print the findings; True when the scenario's expected check named its culprits."""
    rows = store.query(
        "SELECT check, category, ranks, nodes, summary FROM {database}.findings FINAL "
        f"WHERE cluster = '{cluster}' ORDER BY first_seen").dicts()
    for r in rows:
        out(f"[demo] FINDING {r['check']} ({r['category']}): {r['summary']}")
    if scenario is None:
        out(f"[demo] clean run: {len(rows)} findings")
        return True
    exp = scenario.expected()
    if not exp.checks:
        return True
    hit = [r for r in rows if r["check"] in exp.checks and (r["ranks"] or r["nodes"])
           and set(r["ranks"]) <= set(exp.culprit_ranks)
           and set(r["nodes"]) <= set(exp.culprit_nodes)]
    culprits = ", ".join([f"rank {r}" for r in sorted(exp.culprit_ranks)] +
                         sorted(exp.culprit_nodes))
    verdict = "named correctly" if hit else "NOT found"
    out(f"[demo] injected {scenario.name} on {culprits}: {verdict}")
    return bool(hit)


def _plan_maintenance(store: Store, spec: JobSpec, out: Callable[[str], None]) -> None:
    """Silence a node's pages for a planned window tomorrow, as an SRE would."""
    from trainguard.pipeline.alerts.silences import add_silence

    node = spec.node_name(spec.nodes - 1)
    start = (int(time.time()) // 3600 + 24) * 3600.0
    silence = add_silence(store, job_id=None, node=node, starts_at=start, ends_at=start + 7200,
                          reason="planned maintenance: NVLink cable swap (demo)",
                          created_by="trainguard-demo", now=time.time())
    out(f"[demo] planned maintenance: {silence.silence_id} silences {node} tomorrow for 2 h "
        "(trainguard silence list)")


def _report_pages(pager: DemoPager, cluster: str, scenario: Scenario | None,
                  out: Callable[[str], None]) -> None:
    """Print what reached the on-call's receiver (waiting a little for the last ones)."""
    deadline = time.monotonic() + (10 if scenario is not None else 0)
    pages = pager.pages(cluster)
    while not pages and time.monotonic() < deadline:
        time.sleep(0.5)
        pages = pager.pages(cluster)
    for p in pages:
        out(f"[demo] {str(p['severity']).upper()} {p['status']} {p['check']}: {p['summary']}")
        if p.get("link"):
            out(f"[demo]   dashboard: {p['link']}")
    if not pages:
        out("[demo] no alert reached the receiver" + (" (expected one)" if scenario else ""))


def _count(store: Store, table: str, cluster: str) -> int:
    sql = f"SELECT count() FROM {{database}}.{table} FINAL WHERE cluster = '{cluster}'"
    return int(store.query(sql).scalar())


def _wait_for_rows(store: Store, cluster: str, expected: int, worker: WorkerProcess) -> int:
    deadline = time.monotonic() + 120
    stored = _count(store, "sample_batches", cluster)
    while stored < expected and time.monotonic() < deadline:
        worker.check_alive()
        time.sleep(0.5)
        stored = _count(store, "sample_batches", cluster)
    return stored
