"""The shipped Alertmanager routes, and trainguard.local.alertmanager, against the real 0.25 binary.

The tests marked ``integration`` run the Debian package's ``prometheus-alertmanager``
(``make alertmanager`` installs it) with the shipped ``alertmanager.yml`` and a
:class:`RecordingWebhookServer` as both receivers; the others need neither.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trainguard.errors import ConfigError, TrainguardError
from trainguard.local.alertmanager import (
    PAGER_PLACEHOLDER,
    TICKETS_PLACEHOLDER,
    AlertmanagerError,
    AlertmanagerNotFoundError,
    LocalAlertmanager,
    check_config,
    config_template,
    find_amtool,
    render_config,
)
from trainguard.local.webhook_server import AlertmanagerNotification, RecordingWebhookServer
from trainguard.pipeline.alerts.payloads import alertmanager_alert
from trainguard.pipeline.alerts.receivers import AlertmanagerReceiver
from trainguard.schemas.records import Alert

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Must match route.group_interval in infra/alertmanager/alertmanager.yml.
GROUP_INTERVAL_S = 5.0


def _amtool_or_skip() -> Path:
    try:
        return find_amtool()
    except AlertmanagerNotFoundError as exc:
        pytest.skip(str(exc))


def _post_alerts(am: LocalAlertmanager, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(am.alerts_url, data=json.dumps(alerts).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with _OPENER.open(req, timeout=5) as resp:
        assert resp.status == 200


def _alert(fingerprint: str, *, severity: str = "critical", starts_at: datetime,
           ends_at: datetime | None = None) -> dict[str, Any]:
    """An alert with the labels trainguard sends; ``ends_at`` defaults to 5 min ahead."""
    return {
        "labels": {"alertname": "straggler", "severity": severity, "cluster": "c1",
                   "job_id": "job-7", "node": "node-3", "fingerprint": fingerprint},
        "annotations": {"summary": "rank 3 is 40% slower than its peers"},
        "startsAt": starts_at.isoformat(),
        "endsAt": (ends_at or datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
    }


def _about(
    fingerprint: str, status: str = "firing"
) -> Callable[[AlertmanagerNotification], bool]:
    def match(n: AlertmanagerNotification) -> bool:
        return n.status == status and any(
            a.labels.get("fingerprint") == fingerprint for a in n.alerts)
    return match


def _count(rx: RecordingWebhookServer, fingerprint: str, status: str = "firing") -> int:
    return sum(1 for n in rx.notifications() if _about(fingerprint, status)(n))


def _new_fingerprint() -> str:
    return f"tg-{uuid.uuid4().hex[:12]}"


# -- no binary needed -------------------------------------------------------------------


def test_render_config_fills_both_receiver_urls() -> None:
    text = render_config("http://127.0.0.1:1/pager", "https://tickets.example/hook")
    assert "url: 'http://127.0.0.1:1/pager'" in text
    assert "url: 'https://tickets.example/hook'" in text
    assert PAGER_PLACEHOLDER not in text and TICKETS_PLACEHOLDER not in text
    assert "group_by: ['...']" in text and "group_wait: 0s" in text


def test_render_config_sends_tickets_to_the_pager_url_by_default() -> None:
    assert render_config("http://127.0.0.1:1/all").count("url: 'http://127.0.0.1:1/all'") == 2


@pytest.mark.parametrize("url", ["ftp://x/y", "127.0.0.1:1/p", "http://x/a'b", "http://x/ y"])
def test_render_config_rejects_a_bad_url(url: str) -> None:
    with pytest.raises(ConfigError, match="pager receiver URL"):
        render_config(url)


def test_render_config_detects_a_template_without_placeholders(tmp_path: Path) -> None:
    template = tmp_path / "am.yml"
    template.write_text("route:\n  receiver: x\n", encoding="utf-8")
    with pytest.raises(AlertmanagerError, match="no receiver URL placeholder"):
        render_config("http://127.0.0.1:1/p", template=template)


def test_missing_binary_error_names_the_package_and_make_target(tmp_path: Path) -> None:
    with pytest.raises(AlertmanagerNotFoundError) as info:
        LocalAlertmanager("http://127.0.0.1:1/p", binary=tmp_path / "nope")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, TrainguardError)
    assert "prometheus-alertmanager" in str(info.value)
    assert "make alertmanager" in str(info.value)


def _fake_binary(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "fake-alertmanager"
    path.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_command_binds_loopback_and_disables_gossip(tmp_path: Path) -> None:
    am = LocalAlertmanager("http://127.0.0.1:1/p", port=19093, data_dir=tmp_path,
                           binary=_fake_binary(tmp_path, "exit 0"))
    cmd = am.command()
    assert "--web.listen-address=127.0.0.1:19093" in cmd
    assert "--cluster.listen-address=" in cmd
    assert f"--storage.path={tmp_path / 'data'}" in cmd
    assert am.url == "http://127.0.0.1:19093"


def test_start_failure_reports_the_process_output(tmp_path: Path) -> None:
    fake = _fake_binary(tmp_path, "echo 'err=\"bind: address already in use\"' >&2; exit 3")
    am = LocalAlertmanager("http://127.0.0.1:1/p", data_dir=tmp_path, binary=fake)
    with pytest.raises(AlertmanagerError, match=r"(?s)exited \(code 3\).*address already in use"):
        am.start()
    assert not am.running


def test_start_gives_up_after_the_ready_timeout_and_stops_the_process(tmp_path: Path) -> None:
    fake = _fake_binary(tmp_path, "echo starting; exec sleep 30")
    am = LocalAlertmanager("http://127.0.0.1:1/p", data_dir=tmp_path, binary=fake,
                           ready_timeout_s=0.5)
    with pytest.raises(AlertmanagerError, match=r"(?s)not ready within 0.5s.*starting"):
        am.start()
    assert not am.running


# -- amtool on the shipped file ---------------------------------------------------------


def test_shipped_config_passes_amtool_check_config() -> None:
    amtool = _amtool_or_skip()
    report = check_config(config_template(), amtool=amtool)
    assert "SUCCESS" in report and "2 receivers" in report


def test_rendered_config_passes_amtool_check_config(tmp_path: Path) -> None:
    amtool = _amtool_or_skip()
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_config("http://127.0.0.1:1/p", "http://127.0.0.1:1/t"), "utf-8")
    assert "SUCCESS" in check_config(path, amtool=amtool)


def _routed_to(amtool: Path, labels: dict[str, str], config: Path | None = None) -> str:
    out = subprocess.run(
        [str(amtool), "config", "routes", "test",
         f"--config.file={config if config is not None else config_template()}",
         *(f"{k}={v}" for k, v in labels.items())],
        capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


#: kube-prometheus's default Alertmanager routing (its alertmanager-secret.yaml): the tree
#: most existing clusters run, which pages on severity="critical" only.
KUBE_PROMETHEUS_ROUTES = """\
global: {resolve_timeout: 5m}
receivers: [{name: Default}, {name: Watchdog}, {name: Critical}, {name: "null"}]
route:
  group_by: [namespace]
  group_interval: 5m
  group_wait: 30s
  receiver: Default
  repeat_interval: 12h
  routes:
    - {matchers: [alertname = Watchdog], receiver: Watchdog}
    - {matchers: [alertname = InfoInhibitor], receiver: "null"}
    - {matchers: [severity = critical], receiver: Critical}
"""


@pytest.mark.parametrize(("severity", "receiver"),
                         [("critical", "pager"), ("warning", "tickets"), ("info", "tickets"),
                          ("page", "tickets")])
def test_shipped_routes_send_severity_to_the_right_receiver(severity: str, receiver: str) -> None:
    amtool = _amtool_or_skip()
    labels = {"severity": severity, "alertname": "straggler", "cluster": "c1"}
    assert _routed_to(amtool, labels) == receiver


@pytest.mark.parametrize(("severity", "receiver"),
                         [("page", "pager"), ("ticket", "tickets"), ("info", "tickets")])
def test_the_labels_trainguard_sends_route_its_pages_to_the_pager(
        severity: str, receiver: str) -> None:
    amtool = _amtool_or_skip()
    alert = Alert(
        alert_id="fp-1-1700000000000", fingerprint="fp-1", status="firing", severity=severity,
        check="node_idle", summary="rank 3 exited", cluster="c1", job_id="job-7",
        node="node-3", ts=1.7e9, starts_at=1.7e9,
        labels={"severity": severity, "category": "availability", "check": "node_idle"})
    rx = AlertmanagerReceiver(name="am", url="http://127.0.0.1:9093")
    labels = alertmanager_alert(alert, rx, now=1.7e9)["labels"]
    assert _routed_to(amtool, labels) == receiver


@pytest.mark.parametrize(("severity", "receiver"),
                         [("page", "Critical"), ("ticket", "Default"), ("info", "Default")])
def test_a_trainguard_page_pages_in_an_existing_kube_prometheus_tree(
        tmp_path: Path, severity: str, receiver: str) -> None:
    amtool = _amtool_or_skip()
    config = tmp_path / "kube-prometheus.yml"
    config.write_text(KUBE_PROMETHEUS_ROUTES, "utf-8")
    alert = Alert(
        alert_id="fp-1-1700000000000", fingerprint="fp-1", status="firing", severity=severity,
        check="param_divergence", summary="rank 3 differs", cluster="c1", job_id="job-7",
        ts=1.7e9, starts_at=1.7e9, labels={"severity": severity, "category": "integrity"})
    rx = AlertmanagerReceiver(name="am", url="http://127.0.0.1:9093")
    labels = alertmanager_alert(alert, rx, now=1.7e9)["labels"]
    assert _routed_to(amtool, labels, config) == receiver


# -- the real Alertmanager --------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[RecordingWebhookServer]:
    with RecordingWebhookServer() as rx:
        yield rx


@pytest.fixture(scope="module")
def alertmanager(
    receiver: RecordingWebhookServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalAlertmanager]:
    am = LocalAlertmanager(receiver.url_for("/pager"), receiver.url_for("/tickets"),
                           data_dir=tmp_path_factory.mktemp("alertmanager"))
    with am:
        yield am


@pytest.fixture
def rx(receiver: RecordingWebhookServer) -> Iterator[RecordingWebhookServer]:
    """The module's receiver, guaranteed up and answering 200 after each test."""
    yield receiver
    receiver.respond_with(200)
    receiver.start()


@pytest.mark.integration
def test_firing_alert_is_notified_once_despite_resends(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer
) -> None:
    fp, started = _new_fingerprint(), datetime.now(UTC)
    _post_alerts(alertmanager, [_alert(fp, starts_at=started)])
    req = rx.wait_for_notification(_about(fp), timeout=10)
    assert req.path == "/pager"
    note = req.notification
    assert note is not None and note.receiver == "pager"
    [alert] = note.alerts
    assert alert.labels == {"alertname": "straggler", "severity": "critical", "cluster": "c1",
                            "job_id": "job-7", "node": "node-3", "fingerprint": fp}
    assert alert.starts_at is not None and abs(alert.starts_at - started) < timedelta(seconds=1)
    # trainguard re-sends active alerts to keep them alive; none of that may re-page.
    for _ in range(2):
        time.sleep(0.5)
        _post_alerts(alertmanager, [_alert(fp, starts_at=started)])
    time.sleep(GROUP_INTERVAL_S + 1.0)  # past the next flush of this alert's group
    assert _count(rx, fp) == 1


@pytest.mark.integration
def test_alert_with_past_ends_at_sends_a_resolved_notification(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer
) -> None:
    fp, started = _new_fingerprint(), datetime.now(UTC) - timedelta(seconds=1)
    _post_alerts(alertmanager, [_alert(fp, starts_at=started)])
    rx.wait_for_notification(_about(fp), timeout=10)
    # startsAt must stay the original: Alertmanager rejects endsAt before startsAt (400).
    ended = datetime.now(UTC) - timedelta(milliseconds=100)
    _post_alerts(alertmanager, [_alert(fp, starts_at=started, ends_at=ended)])
    req = rx.wait_for_notification(_about(fp, "resolved"), timeout=GROUP_INTERVAL_S + 10)
    assert req.path == "/pager"
    assert req.notification is not None
    [alert] = req.notification.alerts
    assert alert.status == "resolved"
    assert alert.ends_at is not None and abs(alert.ends_at - ended) < timedelta(seconds=1)


@pytest.mark.integration
@pytest.mark.parametrize("severity", ["warning", "info"])
def test_non_page_alerts_go_to_the_tickets_receiver(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer, severity: str
) -> None:
    fp = _new_fingerprint()
    _post_alerts(alertmanager, [_alert(fp, severity=severity, starts_at=datetime.now(UTC))])
    req = rx.wait_for_notification(_about(fp), timeout=10)
    assert req.path == "/tickets"
    assert req.notification is not None and req.notification.receiver == "tickets"


@pytest.mark.integration
def test_alert_posted_while_the_receiver_is_down_arrives_after_it_returns(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer
) -> None:
    fp = _new_fingerprint()
    rx.stop()
    _post_alerts(alertmanager, [_alert(fp, starts_at=datetime.now(UTC))])
    time.sleep(3.0)
    assert _count(rx, fp) == 0
    back = time.time()
    rx.start()
    req = rx.wait_for_notification(_about(fp), timeout=GROUP_INTERVAL_S + 15)
    assert req.received_at >= back
    assert _count(rx, fp) == 1


@pytest.mark.integration
def test_alert_answered_with_503_is_retried_until_accepted(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer
) -> None:
    fp = _new_fingerprint()
    rx.respond_with(503, for_s=2.0)
    _post_alerts(alertmanager, [_alert(fp, starts_at=datetime.now(UTC))])
    rx.wait_for_notification(_about(fp), timeout=GROUP_INTERVAL_S + 15)
    attempts = [r for r in rx.received()
                if r.notification is not None and _about(fp)(r.notification)]
    assert [r.status_code for r in attempts][0] == 503
    assert [r.status_code for r in attempts][-1] == 200
    assert _count(rx, fp) == 1


@pytest.mark.integration
def test_restart_on_the_same_port_serves_new_alerts(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer
) -> None:
    port = alertmanager.port
    alertmanager.stop()
    assert not alertmanager.running
    with pytest.raises(urllib.error.URLError):
        _OPENER.open(alertmanager.url + "/-/ready", timeout=2)
    alertmanager.start()
    assert alertmanager.port == port
    fp = _new_fingerprint()
    _post_alerts(alertmanager, [_alert(fp, starts_at=datetime.now(UTC))])
    assert rx.wait_for_notification(_about(fp), timeout=10).path == "/pager"


@pytest.mark.integration
def test_report_post_to_webhook_latency(
    alertmanager: LocalAlertmanager, rx: RecordingWebhookServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints, does not assert, how long a new alert takes from POST to the webhook."""
    latencies = []
    for _ in range(10):
        fp = _new_fingerprint()
        posted = time.time()
        _post_alerts(alertmanager, [_alert(fp, starts_at=datetime.now(UTC))])
        latencies.append(rx.wait_for_notification(_about(fp), timeout=10).received_at - posted)
    with capsys.disabled():
        print(f"\nalertmanager POST -> webhook (group_wait 0s, n={len(latencies)}): "
              f"median {statistics.median(latencies) * 1000:.1f} ms, "
              f"min {min(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert len(latencies) == 10
