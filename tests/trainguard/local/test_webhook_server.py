from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from trainguard.errors import TrainguardError
from trainguard.local.webhook_server import (
    AlertmanagerNotification,
    RecordingWebhookServer,
    parse_timestamp,
)

# Loopback only; an http_proxy in the environment must not intercept these requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# A real Alertmanager 0.25 webhook body (firing, one alert), as captured from the binary.
AM_PAYLOAD: dict[str, Any] = {
    "receiver": "pager",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "straggler", "severity": "page", "cluster": "c1",
                       "job_id": "j1", "node": "n1", "fingerprint": "tg-1"},
            "annotations": {"summary": "rank 3 is slow"},
            "startsAt": "2026-01-02T03:04:05.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "1a194293766b7b31",
        }
    ],
    "groupLabels": {"alertname": "straggler"},
    "commonLabels": {"alertname": "straggler", "severity": "page"},
    "commonAnnotations": {"summary": "rank 3 is slow"},
    "externalURL": "http://vm:9093",
    "version": "4",
    "groupKey": '{}/{severity="page"}:{alertname="straggler"}',
    "truncatedAlerts": 0,
}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _OPENER.open(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def receiver() -> Iterator[RecordingWebhookServer]:
    rx = RecordingWebhookServer()
    with rx:
        yield rx


def test_post_is_recorded_with_path_headers_body_and_arrival_time() -> None:
    clock = FakeClock(1234.5)
    with RecordingWebhookServer(clock=clock) as rx:
        status = _post(rx.url_for("/hook/a"), b'{"x": 1}', {"X-Token": "t"})
        [req] = rx.received()
    assert status == 200
    assert req.path == "/hook/a"
    assert req.headers["X-Token"] == "t"
    assert req.body == b'{"x": 1}'
    assert req.json == {"x": 1}
    assert req.received_at == 1234.5
    assert req.accepted and req.notification is None


def test_alertmanager_payload_is_parsed(receiver: RecordingWebhookServer) -> None:
    _post(receiver.url_for("/pager"), json.dumps(AM_PAYLOAD).encode())
    [note] = receiver.notifications()
    assert (note.version, note.status, note.receiver) == ("4", "firing", "pager")
    assert note.group_key == AM_PAYLOAD["groupKey"]
    [alert] = note.alerts
    assert alert.labels["fingerprint"] == "tg-1"
    assert alert.annotations == {"summary": "rank 3 is slow"}
    assert alert.starts_at == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert alert.ends_at is None
    assert alert.fingerprint == "1a194293766b7b31"


def test_non_alertmanager_json_is_recorded_without_a_notification(
    receiver: RecordingWebhookServer,
) -> None:
    _post(receiver.url, json.dumps({**AM_PAYLOAD, "version": "3"}).encode())
    _post(receiver.url, b"not json")
    first, second = receiver.received()
    assert first.notification is None and first.json["version"] == "3"
    assert second.json is None and second.body == b"not json"
    assert receiver.notifications() == []


def test_from_json_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="version '3'"):
        AlertmanagerNotification.from_json({**AM_PAYLOAD, "version": "3"})
    bad_alert = {**AM_PAYLOAD["alerts"][0], "status": "pending"}
    with pytest.raises(ValueError, match="alert status 'pending'"):
        AlertmanagerNotification.from_json({**AM_PAYLOAD, "alerts": [bad_alert]})


def test_parse_timestamp_handles_nanoseconds_offsets_and_go_zero_time() -> None:
    assert parse_timestamp("2026-01-02T03:04:05.123456789Z") == datetime(
        2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert parse_timestamp("2026-01-02T05:04:05+02:00") == datetime(2026, 1, 2, 3, 4, 5,
                                                                   tzinfo=UTC)
    assert parse_timestamp("0001-01-01T00:00:00Z") is None
    with pytest.raises(ValueError, match="no time zone"):
        parse_timestamp("2026-01-02T03:04:05")


def test_wait_for_returns_a_request_already_received(receiver: RecordingWebhookServer) -> None:
    _post(receiver.url_for("/a"), b"{}")
    assert receiver.wait_for(lambda r: r.path == "/a", timeout=0.1).path == "/a"


def test_wait_for_wakes_when_a_matching_request_arrives(receiver: RecordingWebhookServer) -> None:
    timer = threading.Timer(0.2, _post, args=(receiver.url_for("/late"), b"{}"))
    timer.start()
    try:
        req = receiver.wait_for(lambda r: r.path == "/late", timeout=5)
    finally:
        timer.join()
    assert req.path == "/late"


def test_wait_for_times_out_listing_what_arrived(receiver: RecordingWebhookServer) -> None:
    _post(receiver.url_for("/other"), b"{}")
    with pytest.raises(TimeoutError, match=r"received 1: \['/other -> 200"):
        receiver.wait_for(lambda r: r.path == "/never", timeout=0.2)


def test_respond_with_503_fails_posts_until_the_period_ends() -> None:
    mono = FakeClock(0.0)
    with RecordingWebhookServer(monotonic=mono) as rx:
        rx.respond_with(503, for_s=60)
        assert _post(rx.url, json.dumps(AM_PAYLOAD).encode()) == 503
        mono.now = 61.0
        assert _post(rx.url, json.dumps(AM_PAYLOAD).encode()) == 200
        failed, ok = rx.received()
    assert (failed.status_code, failed.accepted) == (503, False)
    assert ok.accepted
    assert len(rx.notifications()) == 1  # only the accepted one


def test_respond_with_200_restores_service_at_once(receiver: RecordingWebhookServer) -> None:
    receiver.respond_with(500)
    assert _post(receiver.url, b"{}") == 500
    receiver.respond_with(200)
    assert _post(receiver.url, b"{}") == 200


def test_stopped_receiver_refuses_then_serves_again_on_the_same_port(
    receiver: RecordingWebhookServer,
) -> None:
    port = receiver.port
    _post(receiver.url, b"{}")
    receiver.stop()
    assert not receiver.running
    with pytest.raises(urllib.error.URLError):
        _OPENER.open(urllib.request.Request(receiver.url, data=b"{}", method="POST"), timeout=2)
    receiver.start()
    assert receiver.port == port
    assert _post(receiver.url, b"{}") == 200
    assert len(receiver.received()) == 2  # kept across the restart


def test_clear_forgets_received_requests(receiver: RecordingWebhookServer) -> None:
    _post(receiver.url, b"{}")
    receiver.clear()
    assert receiver.received() == []


def test_url_before_first_start_is_an_error() -> None:
    with pytest.raises(TrainguardError, match="call start"):
        _ = RecordingWebhookServer().url


@pytest.mark.parametrize("bad", [99, 600, True])
def test_respond_with_rejects_a_non_http_status(receiver: RecordingWebhookServer, bad: int) -> None:
    with pytest.raises(TrainguardError, match="expected 200-599"):
        receiver.respond_with(bad)
