from __future__ import annotations

from typing import Any

import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    PagerDutyReceiver,
    SlackReceiver,
    WebhookReceiver,
    parse_receivers,
)

KEY = "k" * 32
SLACK_URL = "https://hooks.slack.com/services/T000/B000/SECRETSECRET"


def test_defaults_follow_the_documented_values() -> None:
    am = AlertmanagerReceiver(name="am", url="http://127.0.0.1:9093")
    assert (am.min_severity, am.resend_s, am.batch_max) == ("ticket", 30.0, 64)
    assert (am.timeout_s, am.backoff_initial_s, am.backoff_max_s, am.give_up_after_s) == (
        5.0, 0.5, 30.0, 3600.0,
    )
    assert am.endpoint == "http://127.0.0.1:9093/api/v2/alerts"
    pd = PagerDutyReceiver(name="pd", routing_key=KEY)
    assert pd.min_severity == "page"
    assert pd.endpoint == "https://events.pagerduty.com/v2/enqueue"
    assert WebhookReceiver(name="wh", url="https://x.example/hook").min_severity == "info"
    assert SlackReceiver(name="sl", url=SLACK_URL).min_severity == "ticket"


def test_alertmanager_endpoint_ignores_a_trailing_slash() -> None:
    am = AlertmanagerReceiver(name="am", url="http://am.example:9093/")
    assert am.endpoint == "http://am.example:9093/api/v2/alerts"


def test_admits_orders_page_over_ticket_over_info() -> None:
    rx = SlackReceiver(name="sl", url=SLACK_URL)  # min ticket
    assert rx.admits("page") and rx.admits("ticket") and not rx.admits("info")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(name=""), "name=''"),
        (dict(min_severity="urgent"), "min_severity='urgent'"),
        (dict(timeout_s=0), "timeout_s=0"),
        (dict(backoff_initial_s=float("nan")), "backoff_initial_s=nan"),
        (dict(give_up_after_s=-1.0), "give_up_after_s=-1.0"),
        (dict(backoff_initial_s=10.0, backoff_max_s=1.0), "backoff_max_s=1.0"),
        (dict(resend_s=0), "resend_s=0"),
        (dict(batch_max=0), "batch_max=0"),
        (dict(batch_max=True), "batch_max=True"),
        (dict(url="ftp://am.example"), "url='ftp://am.example'"),
        (dict(url="127.0.0.1:9093"), "url='127.0.0.1:9093'"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, Any], needle: str) -> None:
    fields: dict[str, Any] = dict(name="am", url="http://127.0.0.1:9093")
    fields.update(kwargs)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        AlertmanagerReceiver(**fields)


def test_pagerduty_routing_key_must_be_32_chars_and_is_never_shown() -> None:
    with pytest.raises(ConfigError, match="routing_key has 6 characters") as err:
        PagerDutyReceiver(name="pd", routing_key="secret")
    assert "secret" not in str(err.value)
    assert KEY not in repr(PagerDutyReceiver(name="pd", routing_key=KEY))


def test_slack_url_is_secret_in_repr_and_errors() -> None:
    assert "SECRET" not in repr(SlackReceiver(name="sl", url=SLACK_URL))
    with pytest.raises(ConfigError, match="scheme 'ftp'") as err:
        SlackReceiver(name="sl", url="ftp://hooks.slack.com/services/SECRETSECRET")
    assert "SECRET" not in str(err.value)


def test_webhook_headers_are_copied_hidden_and_typed() -> None:
    headers = {"Authorization": "Bearer tok"}
    rx = WebhookReceiver(name="wh", url="https://x.example/hook", headers=headers)
    headers["Authorization"] = "changed"
    assert rx.headers == {"Authorization": "Bearer tok"}
    assert "tok" not in repr(rx)
    with pytest.raises(ConfigError, match="headers must map strings to strings"):
        WebhookReceiver(name="wh", url="https://x.example/hook", headers={"X": 1})  # type: ignore[dict-item]


def test_parse_receivers_builds_each_type() -> None:
    got = parse_receivers([
        {"type": "alertmanager", "name": "am", "url": "http://127.0.0.1:9093", "resend_s": 60},
        {"type": "pagerduty", "name": "pd", "routing_key": KEY},
        {"type": "webhook", "name": "wh", "url": "https://x.example/h", "headers": {"A": "b"}},
        {"type": "slack", "name": "sl", "url": SLACK_URL, "min_severity": "page"},
    ])
    assert [type(r).__name__ for r in got] == [
        "AlertmanagerReceiver", "PagerDutyReceiver", "WebhookReceiver", "SlackReceiver",
    ]
    assert isinstance(got[0], AlertmanagerReceiver) and got[0].resend_s == 60
    assert got[3].min_severity == "page"


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ([{"type": "email", "name": "x"}], r"receivers\[0\] \(name='x'\): type='email'"),
        ([{"name": "x"}], r"type=None; expected one of: alertmanager, pagerduty"),
        (
            [{"type": "slack", "name": "sl", "url": SLACK_URL, "channel": "#x"}],
            r"receivers\[0\] \(name='sl'\): unknown key\(s\) channel",
        ),
        ([{"type": "alertmanager", "name": "am"}], r"name='am'\).*missing.*'url'"),
        (
            [
                {"type": "pagerduty", "name": "dup", "routing_key": KEY},
                {"type": "slack", "name": "dup", "url": SLACK_URL},
            ],
            r"receivers\[1\] \(name='dup'\): duplicate receiver name 'dup'",
        ),
        (["slack"], r"receivers\[0\]=str; expected a table"),
        ([{"type": "webhook", "name": "w", "url": "file:///x"}], r"name='w'\).*url='file:///x'"),
    ],
)
def test_parse_receivers_rejects_bad_entries(table: list[Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_receivers(table)


def test_parse_receivers_accepts_an_empty_list() -> None:
    assert parse_receivers([]) == ()
