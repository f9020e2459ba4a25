"""The severity mapping: what each receiver is sent for page / ticket / info."""

from __future__ import annotations

from typing import Any

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.payloads import build_body
from trainguard.pipeline.alerts.receivers import PagerDutyReceiver, parse_receivers
from trainguard.pipeline.alerts.severity import (
    DEFAULT_SEVERITY_LABELS,
    SeverityLabels,
    severity_labels_from,
)
from trainguard.pipeline.config_loader import alerting_from_dict
from trainguard.schemas.records import Alert

T0 = 1_700_000_000.0
KEY = "0123456789abcdef0123456789abcdef"


def alert(severity: str = "page") -> Alert:
    return Alert(alert_id="fp1-1", fingerprint="fp1", status="firing", severity=severity,
                 check="node_idle", summary="rank 8 exited", cluster="c1", ts=T0,
                 starts_at=T0, job_id="job-1", node="node-02",
                 labels={"severity": severity, "category": "availability"})


def receivers(alerts_table: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    cfg = alerting_from_dict({"alerts": alerts_table, "receivers": list(entries)})
    return {r.name: r for r in cfg.receivers}


AM = {"type": "alertmanager", "name": "am", "url": "http://127.0.0.1:9093"}
PD = {"type": "pagerduty", "name": "pd", "routing_key": KEY}
SLACK = {"type": "slack", "name": "sl", "url": "https://hooks.slack.com/services/T/B/X"}
HOOK = {"type": "webhook", "name": "wh", "url": "https://hook.example/in"}


@pytest.mark.parametrize(("severity", "label"),
                         [("page", "critical"), ("ticket", "warning"), ("info", "info")])
def test_defaults_are_what_existing_routing_trees_route_on(severity: str, label: str) -> None:
    assert DEFAULT_SEVERITY_LABELS.label(severity) == label


def test_every_receiver_gets_the_mapped_value_and_the_alert_keeps_its_own() -> None:
    rx = receivers({"severity_labels": {"page": "error", "ticket": "warning"}},
                   AM, PD, SLACK, HOOK)
    a = alert("page")
    [am] = build_body(rx["am"], [a], T0)
    assert am["labels"]["severity"] == "error" and am["labels"]["trainguard_severity"] == "page"
    assert build_body(rx["pd"], [a], T0)["payload"]["severity"] == "error"
    assert build_body(rx["sl"], [a], T0)["text"].startswith("[FIRING error]")
    hook = build_body(rx["wh"], [a], T0)
    assert hook["severity_label"] == "error"
    assert hook["alert"]["severity"] == "page" and hook["alert"]["labels"]["severity"] == "page"
    assert a.severity == "page"


def test_a_receiver_table_overrides_the_global_mapping_for_that_receiver_only() -> None:
    rx = receivers({"severity_labels": {"page": "P1"}},
                   {**AM, "severity_labels": {"ticket": "P3"}}, {**HOOK})
    assert rx["am"].severity_labels == SeverityLabels(page="P1", ticket="P3", info="info")
    assert rx["wh"].severity_labels == SeverityLabels(page="P1", ticket="warning", info="info")


def test_the_alerting_config_keeps_the_global_mapping() -> None:
    cfg = alerting_from_dict({"alerts": {"severity_labels": {"info": "none"}}})
    assert cfg.severity_labels == SeverityLabels(info="none")


def test_pagerduty_refuses_a_value_its_api_rejects_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"severity_labels.page='P1'.*critical, error"):
        receivers({"severity_labels": {"page": "P1"}}, PD)


def test_pagerduty_accepts_its_own_table_beside_a_global_one_it_could_not_take() -> None:
    rx = receivers({"severity_labels": {"page": "P1"}},
                   {**PD, "severity_labels": {"page": "critical"}})
    assert isinstance(rx["pd"], PagerDutyReceiver)
    assert rx["pd"].severity_labels.page == "critical"


@pytest.mark.parametrize("table", [{"page": ""}, {"page": "a b"}, {"page": 3}])
def test_bad_label_values_are_config_errors_naming_the_key(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="severity_labels.page="):
        severity_labels_from(table)


def test_unknown_severity_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key.*critical"):
        alerting_from_dict({"alerts": {"severity_labels": {"critical": "page"}}})


def test_severity_labels_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="expected a table"):
        parse_receivers([{**AM, "severity_labels": "critical"}])
