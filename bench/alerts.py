"""Fault → page: how long from a hard fault to the page arriving at the on-call's receiver.

Everything is real except the GPUs: a local Kafka broker, one ``trainguard worker``
(checks, alert stream jobs, delivery) with its embedded store, the Debian Prometheus
Alertmanager routed by ``infra/alertmanager/alertmanager.yml``, and a local webhook
receiver standing in for the pager (it stamps each notification's arrival).

Simulated jobs (4 nodes × 8 GPUs each) play into Kafka at 1 Hz in wall time, every node
sampling on the same wall-clock second as the agents do. Each job gets one fault: it
happens at a random instant ``u`` (uniform in [0, 1) s) before a sample tick, so the
first sample that shows it comes ``u`` later, as with a real 1 Hz sampler. Reported per
fault kind: fault → page (p50, p99, max), and the split: fault → first sample showing it
(sampling), sample → trainguard's POST acknowledged by Alertmanager (pipeline), and
Alertmanager → webhook.

Fault kinds: ``gpu_lost`` (one GPU falls off the bus: NVML "GPU is lost"), ``rank_killed``
(one rank's process dies: its GPU falls idle), ``node_killed`` (every rank of a node).

    python -m bench.alerts --jobs 10 --rounds 3

``TG_BENCH_DEBUG=1`` prints each fault's timestamps and the worker's log (INFO).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.quantiles import quantile
from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSpec
from trainguard.agents.sim.availability import Kill
from trainguard.agents.sim.job import JobSimulator
from trainguard.agents.sim.player import play
from trainguard.agents.transport import KafkaTransport
from trainguard.local.stack import LocalStack
from trainguard.local.webhook_server import RecordingWebhookServer
from trainguard.local.worker import WorkerProcess
from trainguard.schemas.topics import Topics

KINDS = {
    "gpu_lost": {"ranks": 1, "gpu_lost": True},
    "rank_killed": {"ranks": 1},
    "node_killed": {"ranks": None},
}
WARMUP = 20  # ticks before the first fault: peers known, GPUs seen in use
DEBUG = bool(__import__("os").environ.get("TG_BENCH_DEBUG"))


def _worker_config(stack: LocalStack) -> Path:
    """The worker's TOML: deliver to the stack's Alertmanager."""
    assert stack.alertmanager is not None
    config = stack.data_dir / f"worker-{stack.topics.prefix}.toml"
    config.write_text(f'[[receivers]]\ntype = "alertmanager"\nname = "am"\n'
                      f'url = "{stack.alertmanager.url}"\n')
    return config


def _acked_at(worker: WorkerProcess, alert_id: str) -> float | None:
    """Wall time Alertmanager acknowledged trainguard's POST of the alert's firing."""
    q = ("SELECT toFloat64(min(ts)) FROM {database}.alert_deliveries WHERE "
         f"alert_id = '{alert_id}' AND status = 'firing' AND outcome = 'delivered'")
    value = worker.query(q).scalar()
    return float(value) if value else None


def _stored_at(worker: WorkerProcess, table: str, job_id: str) -> float | None:
    """Wall time the job's first row landed in ``table`` (findings, alerts)."""
    q = (f"SELECT toFloat64(min(ingested_at)) FROM {{database}}.{table} "
         f"WHERE job_id = '{job_id}'")
    value = worker.query(q).scalar()
    return float(value) if value else None


def run_round(bootstrap: str, prefix: str, kind: str, jobs: int, worker: WorkerProcess,
              receiver: RecordingWebhookServer, rng: random.Random) -> list[dict[str, float]]:
    """``jobs`` jobs, one fault each (staggered 2 s apart); one row per fault."""
    t0 = float(int(time.time()) + 2)  # tick 0 on a whole second, as agents tick
    faults: dict[str, tuple[float, float]] = {}  # job → (fault instant, first sample)
    sims = []
    for j in range(jobs):
        job_id = f"{kind}-{uuid.uuid4().hex[:6]}"
        spec = JobSpec(job_id=job_id, cluster=f"bench-{prefix}", nodes=4, gpus_per_node=8,
                       node_prefix=f"{job_id}-node")
        at = WARMUP + 2 * j
        scenario = Kill(spec=spec, seed=j, at=at, node=rng.randrange(4),
                        peers_continue_s=None, **KINDS[kind])  # type: ignore[arg-type]
        sims.append(JobSimulator(spec, scenario, seed=j, start_ts=t0))
        first_sample = t0 + at
        faults[job_id] = (first_sample - rng.random(), first_sample)
    arrived: dict[str, tuple[float, str]] = {}

    def collect(_t: int) -> bool:
        for req in receiver.received():
            n = req.notification
            if not req.accepted or n is None or n.receiver != "pager" or n.status != "firing":
                continue
            for a in n.alerts:
                job = a.labels.get("job_id", "")
                if job in faults and job not in arrived:
                    arrived[job] = (req.received_at, a.labels.get("alert_id", ""))
        return len(arrived) == len(faults)

    transport = KafkaTransport(KafkaProducerSettings(bootstrap=bootstrap))
    try:
        play(sims, transport.send, Topics(prefix), WARMUP + 2 * jobs + 30, start=t0,
             on_tick=collect)
    finally:
        transport.close(timeout=10)
    collect(0)
    rows = []
    for job, (fault, sample) in faults.items():
        if job not in arrived:
            print(f"  {kind}: no page for {job}", flush=True)
            continue
        at, alert_id = arrived[job]
        acked = _acked_at(worker, alert_id)
        finding, alert = _stored_at(worker, "findings", job), _stored_at(worker, "alerts", job)
        if DEBUG:
            print(f"  {job}: sample {sample:.3f} page {at:.3f} acked {acked}", flush=True)
        rows.append({"total": at - fault, "sampling": sample - fault,
                     "finding_row": (finding - sample) if finding else float("nan"),
                     "alert_row": (alert - sample) if alert else float("nan"),
                     "pipeline": (acked - sample) if acked else float("nan"),
                     "alertmanager": (at - acked) if acked else float("nan")})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10, help="jobs (faults) per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--batch-within", type=float, default=0.2,
                   help="the worker's --batch-within (its default)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="tg-alert-bench-") as tmp:
        prefix = f"ab{uuid.uuid4().hex[:6]}"
        stack = LocalStack(Path(tmp), topic_prefix=prefix, pager="alertmanager",
                           worker_config=_worker_config, app_id=f"bench-{prefix}",
                           batch_within=args.batch_within,
                           log_level="INFO" if DEBUG else "WARNING")
        with stack:
            assert stack.receiver is not None
            try:
                for kind in args.kinds:
                    rows: list[dict[str, float]] = []
                    for _ in range(args.rounds):
                        rows += run_round(stack.bootstrap, prefix, kind, args.jobs,
                                          stack.worker, stack.receiver, rng)
                    _report(kind, rows, args.jobs * args.rounds)
            finally:
                if DEBUG:
                    print(stack.worker.log_tail(400)[-20000:])


def _report(kind: str, rows: list[dict[str, float]], faults: int) -> None:
    total = [r["total"] for r in rows]
    if not total:
        print(f"{kind}: no page arrived for {faults} faults", flush=True)
        return
    parts = {k: statistics.median([r[k] for r in rows]) for k in
             ("sampling", "pipeline", "alertmanager")}
    print(f"{kind}: {len(rows)}/{faults} paged; fault → page p50 {statistics.median(total):.2f} s"
          f"  p99 {quantile(total, 0.99):.2f} s  max {max(total):.2f} s  | medians: sampling "
          f"{parts['sampling']:.2f} s, pipeline {parts['pipeline']:.2f} s, Alertmanager → "
          f"webhook {parts['alertmanager'] * 1000:.0f} ms", flush=True)
    stages = {k: statistics.median([r[k] for r in rows]) for k in ("finding_row", "alert_row")}
    print(f"  from the first faulty sample (medians): finding row stored "
          f"{stages['finding_row']:.2f} s, alert row stored {stages['alert_row']:.2f} s, "
          f"POST acknowledged {parts['pipeline']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
