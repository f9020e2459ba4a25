"""Pages end to end: simulated job → real Kafka → worker → real Alertmanager → webhook.

The job simulator plays a 16-rank job into the session's broker; the worker (its own
process and chdb store) runs the checks and the alert stream jobs and delivers to a real
Alertmanager (the Debian package) routed with the shipped ``infra/alertmanager`` config,
whose webhook receivers are a local HTTP server recording what arrives. Each test injects
a fault into one rank's GPU at a known tick and checks what reached the pager route.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from trainguard.agents.config import KafkaProducerSettings
from trainguard.agents.sim import JobSpec
from trainguard.agents.sim.availability import Kill
from trainguard.agents.sim.job import JobSimulator
from trainguard.agents.sim.player import play
from trainguard.agents.transport import KafkaTransport
from trainguard.local.alertmanager import LocalAlertmanager
from trainguard.local.webhook_server import AlertmanagerNotification, RecordingWebhookServer
from trainguard.schemas.topics import Topics

pytestmark = pytest.mark.integration

SPEED = 4.0  # event seconds per wall second


@dataclass(kw_only=True)
class Flicker(Kill):
    """One rank's process dies at ``at`` and comes back after ``down_s``; with ``up_s``
    it keeps dying and coming back (a flapping GPU)."""

    name: ClassVar[str] = "flicker"
    down_s: int = 20
    up_s: int | None = None

    def during(self, sim: JobSimulator, dt: int) -> None:
        period = self.down_s + (self.up_s if self.up_s is not None else 10**9)
        alive = dt % period >= self.down_s
        for r in self._killed():
            sim.knobs.alive[r] = alive


@pytest.fixture
def stack_pager() -> str:
    """The conftest's stack pages: a webhook receiver behind a real Alertmanager."""
    return "alertmanager"


@pytest.fixture
def pager(local_stack) -> tuple[RecordingWebhookServer, LocalAlertmanager]:
    """The webhook receiver and the real Alertmanager routing to it (pages → /pager)."""
    assert local_stack.receiver is not None and local_stack.alertmanager is not None
    return local_stack.receiver, local_stack.alertmanager


def _config(tmp_path: Path, am_url: str, **receiver: object) -> Path:
    extra = "".join(f"{k} = {v}\n" for k, v in receiver.items())
    path = tmp_path / "worker.toml"
    path.write_text(
        "[alerts]\nclear_hold_s = 5.0\n\n"
        f'[[receivers]]\ntype = "alertmanager"\nname = "am"\nurl = "{am_url}"\n'
        f"resend_s = 10.0\n{extra}"
    )
    return path


def _job(prefix: str, scenario_kw: dict[str, object]) -> tuple[JobSimulator, Flicker, str]:
    job_id = f"job-{uuid.uuid4().hex[:6]}"
    spec = JobSpec(job_id=job_id, cluster=f"c-{prefix}", nodes=4, gpus_per_node=4,
                   node_prefix=f"{prefix}-node")
    scenario = Flicker(spec=spec, seed=1, node=2, ranks=1, peers_continue_s=None,
                       **scenario_kw)  # type: ignore[arg-type]
    return JobSimulator(spec, scenario, seed=1, start_ts=time.time()), scenario, job_id


def _pages(receiver: RecordingWebhookServer, job_id: str,
           status: str) -> list[AlertmanagerNotification]:
    return [n for n in receiver.notifications()
            if n.receiver == "pager" and n.status == status
            and any(a.labels.get("job_id") == job_id for a in n.alerts)]


def _run(bootstrap: str, prefix: str, sim: JobSimulator, ticks: int,
         until: Callable[[int], bool | None] | None = None) -> None:
    transport = KafkaTransport(KafkaProducerSettings(bootstrap=bootstrap))
    try:
        play([sim], transport.send, Topics(prefix), ticks, speed=SPEED, on_tick=until)
    finally:
        transport.close(timeout=10)


def test_a_dead_gpu_pages_once_through_alertmanager_and_resolves_when_back(
        bootstrap, worker_process, tmp_path, pager):
    receiver, am = pager
    worker_process.start(extra_args=["--config", str(_config(tmp_path, am.url))])
    sim, scenario, job_id = _job(worker_process.prefix, {"at": 30, "down_s": 20})
    _run(bootstrap, worker_process.prefix, sim, 110)
    receiver.wait_for(lambda _r: bool(_pages(receiver, job_id, "resolved")), timeout=30)
    time.sleep(6)  # one more Alertmanager flush: nothing else may arrive
    fired = _pages(receiver, job_id, "firing")
    resolved = _pages(receiver, job_id, "resolved")
    assert len(fired) == 1, [n.alerts for n in fired]
    assert len(resolved) == 1, [n.alerts for n in resolved]
    [page] = fired[0].alerts
    assert page.labels["alertname"] == "node_idle" and page.labels["severity"] == "critical"
    assert page.labels["trainguard_severity"] == "page"
    assert page.labels["node"] == f"{worker_process.prefix}-node-02" and page.labels["rank"] == "8"
    assert "training process exited" in page.annotations["summary"]
    assert resolved[0].alerts[0].labels["fingerprint"] == page.labels["fingerprint"]
    # The rank's missing steps are the same incident: a related ticket, not a second page.
    tickets = [a for n in receiver.notifications() if n.receiver == "tickets"
               for a in n.alerts if a.labels.get("job_id") == job_id]
    assert {a.labels["alertname"] for a in tickets} >= {"rank_missing"}
    assert all(a.labels.get("related_to") == page.labels["alert_id"] for a in tickets
               if a.labels["alertname"] == "rank_missing")
    # Every state change is recorded, with what was delivered where.
    rows = worker_process.query(
        "SELECT check, status, severity FROM {database}.alerts FINAL "
        f"WHERE job_id = '{job_id}' ORDER BY ts").rows
    rows = [tuple(r) for r in rows]
    assert ("node_idle", "firing", "page") in rows and ("node_idle", "resolved", "page") in rows
    assert worker_process.wait_for(
        "SELECT count() FROM {database}.alert_deliveries WHERE receiver = 'am' AND "
        f"outcome = 'delivered' AND alert_id = '{page.labels['alert_id']}'", 2) == 2


def test_alertmanager_down_for_60_s_gets_the_page_when_it_is_back(
        bootstrap, worker_process, tmp_path, pager):
    receiver, am = pager
    config = _config(tmp_path, am.url, backoff_max_s=5.0)
    worker_process.start(extra_args=["--config", str(config)])
    sim, scenario, job_id = _job(worker_process.prefix, {"at": 20})
    am.stop()
    stopped = time.monotonic()
    _run(bootstrap, worker_process.prefix, sim, 60)
    assert worker_process.wait_for(
        "SELECT count() FROM {database}.alerts WHERE job_id = "
        f"'{job_id}' AND severity = 'page'", 1) >= 1
    assert _pages(receiver, job_id, "firing") == []
    time.sleep(max(0.0, 60 - (time.monotonic() - stopped)))
    am.start()
    receiver.wait_for(lambda _r: bool(_pages(receiver, job_id, "firing")), timeout=60)
    time.sleep(12)  # a retry or re-send must not page again
    assert len(_pages(receiver, job_id, "firing")) == 1
    retries = worker_process.scalar(
        "SELECT max(attempts) FROM {database}.alert_deliveries WHERE receiver = 'am' "
        "AND outcome = 'delivered'")
    assert retries > 1  # it took several attempts, and got there


def test_a_flapping_gpu_pages_once(bootstrap, worker_process, tmp_path, pager):
    receiver, am = pager
    worker_process.start(extra_args=["--config", str(_config(tmp_path, am.url))])
    # Dies for 6 s, back for 40 s (long enough to clear and resolve), three times over.
    sim, scenario, job_id = _job(worker_process.prefix, {"at": 20, "down_s": 6, "up_s": 40})
    _run(bootstrap, worker_process.prefix, sim, 20 + 3 * 46 + 5)

    def flapping(_r: object) -> bool:
        return any(a.labels.get("flapping") == "true" and a.labels.get("job_id") == job_id
                   for n in receiver.notifications() for a in n.alerts)

    receiver.wait_for(flapping, timeout=30)
    time.sleep(6)
    assert len(_pages(receiver, job_id, "firing")) == 1  # woken once, not each time
    # The episodes after the first reached the ticket route, saying that it flaps.
    again = [a for n in receiver.notifications() if n.receiver == "tickets"
             for a in n.alerts if a.labels.get("flapping") == "true"]
    assert again and {a.labels["alertname"] for a in again} >= {"node_idle"}


def test_a_pager_down_for_60_s_behind_alertmanager_gets_the_page_when_back(
        bootstrap, worker_process, tmp_path, pager):
    receiver, am = pager
    worker_process.start(extra_args=["--config", str(_config(tmp_path, am.url))])
    sim, scenario, job_id = _job(worker_process.prefix, {"at": 20})
    receiver.stop()  # the on-call's end (a webhook, PagerDuty's edge) is unreachable
    stopped = time.monotonic()
    _run(bootstrap, worker_process.prefix, sim, 60)
    # trainguard delivered to Alertmanager; Alertmanager keeps retrying its receiver.
    assert worker_process.wait_for(
        "SELECT count() FROM {database}.alert_deliveries WHERE outcome = 'delivered' AND "
        "status = 'firing' AND severity = 'page'", 1) >= 1
    time.sleep(max(0.0, 60 - (time.monotonic() - stopped)))
    receiver.start()
    receiver.wait_for(lambda _r: bool(_pages(receiver, job_id, "firing")), timeout=60)
    time.sleep(12)  # later flushes must not page again
    assert len(_pages(receiver, job_id, "firing")) == 1
