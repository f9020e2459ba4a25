from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import pytest

from trainguard.pipeline.alerts.payloads import (
    alertmanager_alert,
    alertmanager_body,
    build_body,
    pagerduty_event,
    rfc3339,
    slack_message,
    webhook_body,
)
from trainguard.pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    PagerDutyReceiver,
    SlackReceiver,
    WebhookReceiver,
)
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Alert

T0 = 1_700_000_000.0
NOW = T0 + 90
KEY = "0123456789abcdef0123456789abcdef"
AM = AlertmanagerReceiver(name="am", url="http://127.0.0.1:9093", resend_s=30)
PD = PagerDutyReceiver(name="pd", routing_key=KEY)
SLACK = SlackReceiver(name="sl", url="https://hooks.slack.com/services/T/B/X")
HOOK = WebhookReceiver(name="wh", url="https://hook.example/in")


def alert(**kw: Any) -> Alert:
    fields: dict[str, Any] = dict(
        alert_id="fp1-1700000000000", fingerprint="fp1", status="firing", severity="page",
        check="param_divergence", summary="rank 6 on node-00: param checksum differs.",
        cluster="c1", ts=T0, starts_at=T0, job_id="job-1", node="node-00", rank=6,
        gpu_index=3, evidence={"replicas": 31.0, "observed": "94ebc174", "first_seen": T0 - 5,
                               "last_seen": T0, "score": 0.5, "gone": None},
        labels={"check": "param_divergence", "category": "integrity", "cluster": "c1",
                "job_id": "job-1", "node": "node-00", "severity": "page"},
        runbook_url="https://trainguard.example/runbooks/param_divergence",
        dashboard_url="https://grafana.example/d/trainguard-job?var-job=job-1&var-node=node-00",
    )
    fields.update(kw)
    return Alert(**fields)


def resolved(**kw: Any) -> Alert:
    return alert(status="resolved", ts=T0 + 60, ends_at=T0 + 60, **kw)


def parse(ts: str) -> float:
    assert ts.endswith("Z")
    return datetime.fromisoformat(ts).timestamp()


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(T0 + 0.25) == "2023-11-14T22:13:20.250Z"


def test_alertmanager_labels_identify_one_trainguard_alert() -> None:
    body = alertmanager_alert(alert(), AM, NOW)
    assert body["labels"] == {
        "alertname": "param_divergence", "check": "param_divergence", "category": "integrity",
        "cluster": "c1", "job_id": "job-1", "node": "node-00", "severity": "critical",
        "trainguard_severity": "page", "fingerprint": "fp1", "alert_id": "fp1-1700000000000",
        "rank": "6", "gpu": "3",
    }
    assert set(body) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert body["generatorURL"] == alert().dashboard_url


def test_alertmanager_annotations_describe_the_alert() -> None:
    ann = alertmanager_alert(alert(), AM, NOW)["annotations"]
    assert ann["summary"] == "rank 6 on node-00: param checksum differs."
    assert ann["description"].splitlines() == [
        "replicas=31", "observed=94ebc174", f"first_seen={int(T0 - 5)}", f"last_seen={int(T0)}",
        "score=0.5", "gone=none",
    ]
    assert ann["runbook_url"].endswith("/param_divergence")
    assert ann["alert_id"] == "fp1-1700000000000"
    assert parse(ann["first_seen"]) == T0 - 5 and parse(ann["last_seen"]) == T0
    assert all(isinstance(v, str) for v in ann.values())


def test_alertmanager_firing_ends_four_resends_from_now() -> None:
    body = alertmanager_alert(alert(), AM, NOW)
    assert parse(body["startsAt"]) == T0
    assert parse(body["endsAt"]) == NOW + 4 * 30


def test_alertmanager_resolved_ends_at_its_end_but_never_in_the_future() -> None:
    assert parse(alertmanager_alert(resolved(), AM, NOW)["endsAt"]) == T0 + 60
    late_clock = alertmanager_alert(resolved(), AM, T0 + 10)  # event time ahead of wall time
    assert parse(late_clock["startsAt"]) == T0
    assert parse(late_clock["endsAt"]) == T0 + 10


def test_alertmanager_start_is_capped_at_now_and_end_never_precedes_it() -> None:
    body = alertmanager_alert(resolved(), AM, T0 - 100)  # wall clock behind event time
    assert parse(body["startsAt"]) == T0 - 100 == parse(body["endsAt"])


def test_alertmanager_sanitizes_label_names_and_drops_empty_values() -> None:
    body = alertmanager_alert(alert(labels={"gpu.model": "h100", "1x": "y", "empty": ""},
                                    rank=None, gpu_index=None, dashboard_url=None), AM, NOW)
    assert body["labels"]["gpu_model"] == "h100" and body["labels"]["_1x"] == "y"
    assert "empty" not in body["labels"] and "rank" not in body["labels"]
    assert body["labels"]["severity"] == "critical" and body["labels"]["cluster"] == "c1"
    assert "generatorURL" not in body and "dashboard_url" not in body["annotations"]


def test_alertmanager_body_is_a_list_per_alert() -> None:
    body = alertmanager_body([alert(), alert(fingerprint="fp2")], AM, NOW)
    assert [b["labels"]["fingerprint"] for b in body] == ["fp1", "fp2"]


def test_pagerduty_trigger_has_every_published_field() -> None:
    ev = pagerduty_event(alert(), PD, NOW)
    assert ev["routing_key"] == KEY and ev["event_action"] == "trigger"
    assert ev["dedup_key"] == "fp1"
    p = ev["payload"]
    assert p["summary"] == alert().summary and p["source"] == "node-00"
    assert p["severity"] == "critical" and parse(p["timestamp"]) == T0
    assert (p["component"], p["group"], p["class"]) == ("param_divergence", "job-1", "integrity")
    assert p["custom_details"]["evidence"]["replicas"] == 31.0
    assert p["custom_details"]["alert_id"] == "fp1-1700000000000"
    assert ev["links"] == [
        {"href": alert().dashboard_url, "text": "Dashboard"},
        {"href": alert().runbook_url, "text": "Runbook"},
    ]
    assert ev["client"] == "trainguard" and ev["client_url"] == alert().dashboard_url


@pytest.mark.parametrize(("severity", "expected"),
                         [("page", "critical"), ("ticket", "warning"), ("info", "info")])
def test_pagerduty_severity_mapping(severity: str, expected: str) -> None:
    assert pagerduty_event(alert(severity=severity), PD, NOW)["payload"]["severity"] == expected


def test_pagerduty_source_falls_back_to_job_then_cluster() -> None:
    assert pagerduty_event(alert(node=None), PD, NOW)["payload"]["source"] == "job-1"
    no_job = pagerduty_event(alert(node=None, job_id=None, labels={}), PD, NOW)["payload"]
    assert no_job["source"] == "c1" and "group" not in no_job and "class" not in no_job


def test_pagerduty_summary_is_truncated_to_1024_chars() -> None:
    summary = pagerduty_event(alert(summary="x" * 5000), PD, NOW)["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")


def test_pagerduty_resolve_is_minimal_with_the_same_dedup_key() -> None:
    assert pagerduty_event(resolved(), PD, NOW) == {
        "routing_key": KEY, "dedup_key": "fp1", "event_action": "resolve",
    }


def test_pagerduty_dedup_key_stays_within_255_chars() -> None:
    ev = pagerduty_event(alert(fingerprint="f" * 256), PD, NOW)
    assert len(ev["dedup_key"]) <= 255
    assert ev["dedup_key"] == pagerduty_event(resolved(fingerprint="f" * 256), PD, NOW)[
        "dedup_key"]


def test_slack_firing_and_resolved_messages_look_different() -> None:
    firing = slack_message(alert(), SLACK, NOW)
    done = slack_message(resolved(), SLACK, NOW)
    assert firing["text"].startswith("[FIRING critical]") and done["text"].startswith("[RESOLVED]")
    first = firing["blocks"][0]["text"]["text"]
    assert ":red_circle:" in first and "*FIRING*" in first
    first_done = done["blocks"][0]["text"]["text"]
    assert ":white_check_mark:" in first_done and "~rank 6" in first_done
    assert "resolved after 1 min" in first_done
    for msg in (firing, done):
        for block in msg["blocks"]:
            assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= 3000


def test_slack_escapes_markup_and_bounds_sections() -> None:
    msg = slack_message(alert(summary="<!channel> a & b", evidence={"k": "v" * 9000}), SLACK, NOW)
    assert "&lt;!channel&gt; a &amp; b" in msg["blocks"][0]["text"]["text"]
    assert "<!channel>" not in msg["text"]
    assert all(len(b["text"]["text"]) <= 3000 for b in msg["blocks"])
    links = msg["blocks"][-1]["text"]["text"]
    assert "var-job=job-1&amp;var-node=node-00|Dashboard>" in links


def test_webhook_body_round_trips_the_alert() -> None:
    body = webhook_body(alert(), HOOK, NOW)
    assert body["version"] == "1"
    decoded: Alert = RecordDecoder(Alert).decode(msgspec.json.encode(body["alert"]))
    assert encode(decoded) == encode(alert())


def test_build_body_dispatches_by_receiver() -> None:
    assert isinstance(build_body(AM, [alert(), alert(fingerprint="b")], NOW), list)
    assert build_body(PD, [alert()], NOW)["event_action"] == "trigger"
    assert "blocks" in build_body(SLACK, [alert()], NOW)
    assert build_body(HOOK, [alert()], NOW)["version"] == "1"
    with pytest.raises(ValueError, match="one alert per request"):
        build_body(PD, [alert(), alert()], NOW)
