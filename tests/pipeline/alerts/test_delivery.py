"""Delivery against real HTTP servers on 127.0.0.1 that check the published formats."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Literal

import msgspec
import pytest
from aiohttp import web

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.delivery import Dispatcher, MemoryLedger
from trainguard.pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    PagerDutyReceiver,
    ReceiverConfig,
    SlackReceiver,
    WebhookReceiver,
)
from trainguard.schemas.codec import RecordDecoder
from trainguard.schemas.records import Alert

T0 = 1_700_000_000.0
KEY = "0123456789abcdef0123456789abcdef"
COLUMNS = {"receiver", "alert_id", "fingerprint", "status", "severity", "outcome", "attempts",
           "detail", "ts", "alert_ts"}
FAST: dict[str, Any] = dict(backoff_initial_s=0.01, backoff_max_s=0.04)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Validator = Callable[[web.Request, Any], list[str]]


def alert(
    n: int = 1, *, status: Literal["firing", "resolved"] = "firing",
    severity: Literal["page", "ticket", "info"] = "page",
) -> Alert:
    resolved = status == "resolved"
    return Alert(
        alert_id=f"fp{n}-1", fingerprint=f"fp{n}", status=status, severity=severity,
        check="param_divergence", summary=f"alert {n}", cluster="c1",
        ts=T0 + 60 if resolved else T0, starts_at=T0, ends_at=T0 + 60 if resolved else None,
        job_id="job-1", node=f"node-{n:02d}", evidence={"replicas": 31.0},
        labels={"check": "param_divergence", "category": "integrity", "severity": severity},
        runbook_url="https://trainguard.example/runbooks/param_divergence",
    )


def is_time(value: Any) -> bool:
    if not isinstance(value, str) or not RFC3339.match(value):
        return False
    return datetime.fromisoformat(value).tzinfo is not None


def check_pagerduty(request: web.Request, body: Any) -> list[str]:
    """Events API v2, as published: the fields, their types and limits."""
    bad = [] if request.path == "/v2/enqueue" else [f"path {request.path}"]
    rk, action, dk = body.get("routing_key"), body.get("event_action"), body.get("dedup_key")
    if not (isinstance(rk, str) and len(rk) == 32):
        bad.append("routing_key")
    if action not in ("trigger", "acknowledge", "resolve"):
        bad.append("event_action")
    if not (isinstance(dk, str) and 0 < len(dk) <= 255):
        bad.append("dedup_key")
    if action != "trigger":
        return bad + ([] if set(body) <= {"routing_key", "event_action", "dedup_key"} else ["keys"])
    if not set(body) <= {"routing_key", "event_action", "dedup_key", "payload", "images",
                         "links", "client", "client_url"}:
        bad.append(f"keys {sorted(body)}")
    p = body.get("payload") or {}
    if not (isinstance(p.get("summary"), str) and 0 < len(p["summary"]) <= 1024):
        bad.append("payload.summary")
    if not (isinstance(p.get("source"), str) and p["source"]):
        bad.append("payload.source")
    if p.get("severity") not in ("critical", "error", "warning", "info"):
        bad.append("payload.severity")
    if not is_time(p.get("timestamp")):
        bad.append("payload.timestamp")
    bad += [f"payload.{k}" for k in ("component", "group", "class")
            if k in p and not isinstance(p[k], str)]
    if not isinstance(p.get("custom_details", {}), dict):
        bad.append("payload.custom_details")
    for link in body.get("links", []):
        if not (isinstance(link.get("href"), str) and link["href"].startswith("http")):
            bad.append("links.href")
    return bad


def check_alertmanager(request: web.Request, body: Any) -> list[str]:
    """API v2 postableAlerts: labels required, string maps, RFC 3339 times."""
    bad = [] if request.path == "/api/v2/alerts" else [f"path {request.path}"]
    if not (isinstance(body, list) and body):
        return bad + ["not a non-empty array"]
    for a in body:
        if not set(a) <= {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}:
            bad.append(f"keys {sorted(a)}")
        labels = a.get("labels")
        if not (isinstance(labels, dict) and labels and "alertname" in labels):
            bad.append("labels")
            continue
        bad += [f"label {k}={v!r}" for k, v in labels.items()
                if not (LABEL_NAME.match(k) and isinstance(v, str) and v)]
        if not all(isinstance(v, str) for v in a.get("annotations", {}).values()):
            bad.append("annotations")
        if not (is_time(a.get("startsAt")) and is_time(a.get("endsAt"))):
            bad.append("startsAt/endsAt")
        elif datetime.fromisoformat(a["endsAt"]) < datetime.fromisoformat(a["startsAt"]):
            bad.append("endsAt before startsAt")
    return bad


def check_slack(request: web.Request, body: Any) -> list[str]:
    bad = [] if isinstance(body.get("text"), str) and body["text"] else ["text"]
    for block in body.get("blocks", []):
        text = block.get("text", {})
        if block.get("type") != "section" or text.get("type") != "mrkdwn":
            bad.append("block type")
        if not (isinstance(text.get("text"), str) and 0 < len(text["text"]) <= 3000):
            bad.append("section text")
    return bad


def check_webhook(request: web.Request, body: Any) -> list[str]:
    bad = [] if request.headers.get("Authorization") == "Bearer t" else ["auth"]
    if body.get("version") != "1":
        bad.append("version")
    RecordDecoder(Alert).decode(msgspec.json.encode(body.get("alert")))  # raises if invalid
    return bad


class Server:
    """A receiver on 127.0.0.1: validates each request; scripted failures answer first."""

    def __init__(self, check: Validator, ok_status: int = 200) -> None:
        self.check, self.ok_status = check, ok_status
        self.accepted: list[Any] = []
        self.problems: list[str] = []
        self.hits = 0
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.gate: asyncio.Event | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> Server:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.gate is not None:
            await self.gate.wait()
        if request.content_type != "application/json":
            self.problems.append(f"content type {request.content_type}")
        body = await request.json()
        if self.script:
            status, headers = self.script.popleft()
            return web.Response(status=status, headers=headers, text="scripted")
        problems = self.check(request, body)
        if problems:
            self.problems += problems
            return web.Response(status=400, text="; ".join(problems))
        self.accepted.append(body)
        return web.json_response({"status": "success"}, status=self.ok_status)


class FakeTime:
    """Wall clock that sleeps advance; each sleep yields for at most ``cap`` real seconds."""

    def __init__(self, cap: float = 0.002) -> None:
        self.now = T0 + 100
        self.cap = cap
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(min(seconds, self.cap))


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 15))


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def dispatcher(receivers: list[ReceiverConfig], ft: FakeTime, **kw: Any) -> Dispatcher:
    return Dispatcher(receivers, kw.pop("ledger", MemoryLedger()), clock=ft.clock,
                      sleep=ft.sleep, rng=lambda: 1.0, **kw)


def pagerduty(server: Server, **kw: Any) -> PagerDutyReceiver:
    return PagerDutyReceiver(name="pd", routing_key=KEY, url=f"{server.url}/v2/enqueue",
                             **{**FAST, **kw})


def test_pagerduty_gets_trigger_then_resolve_once_with_ledger_rows() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        ft, ledger = FakeTime(), MemoryLedger()
        d = dispatcher([pagerduty(server)], ft, ledger=ledger)
        await d.start()
        await (await d.submit([alert(), alert(status="resolved")]))
        await d.stop(drain_s=1)
        await server.stop()
        assert server.problems == []
        assert [b["event_action"] for b in server.accepted] == ["trigger", "resolve"]
        assert server.accepted[0]["payload"]["severity"] == "critical"
        rows = ledger.take_rows()
        assert [set(r) for r in rows] == [COLUMNS, COLUMNS]
        assert [(r["status"], r["outcome"], r["attempts"]) for r in rows] == [
            ("firing", "delivered", 1), ("resolved", "delivered", 1)]
        assert rows[0]["ts"] == ft.now and rows[1]["alert_ts"] == T0 + 60
        assert ledger.take_rows() == []
        assert d.stats()["pd"] == dict(sent=2, retries=0, failed=0, queued=0, resent=0,
                                          skipped=0)

    run(main())


def test_429_is_retried_after_the_retry_after_seconds() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        server.script.append((429, {"Retry-After": "7"}))
        ft, ledger = FakeTime(), MemoryLedger()
        d = dispatcher([pagerduty(server)], ft, ledger=ledger)
        await d.start()
        await (await d.submit([alert()]))
        await d.stop(drain_s=1)
        await server.stop()
        assert ft.sleeps == [7.0]
        assert len(server.accepted) == 1 and server.problems == []
        assert ledger.take_rows()[0]["attempts"] == 2
        assert d.stats()["pd"]["retries"] == 1

    run(main())


def test_503_is_retried_with_exponential_backoff_capped_at_max() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        server.script.extend([(503, {})] * 4)
        ft = FakeTime()
        d = dispatcher([pagerduty(server)], ft)
        await d.start()
        await (await d.submit([alert()]))
        await d.stop(drain_s=1)
        await server.stop()
        assert ft.sleeps == [0.01, 0.02, 0.04, 0.04]  # rng=1.0: the full backoff each time
        assert len(server.accepted) == 1 and d.stats()["pd"]["retries"] == 4

    run(main())


def test_400_is_not_retried_and_reaches_on_failed() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        server.script.append((400, {}))
        ft, ledger = FakeTime(), MemoryLedger()
        failed: list[tuple[str, str, str]] = []
        d = dispatcher([pagerduty(server)], ft, ledger=ledger,
                       on_failed=lambda a, rx, why: failed.append((a.alert_id, rx, why)))
        await d.start()
        future = await d.submit([alert()])
        await future
        await d.stop(drain_s=1)
        await server.stop()
        assert server.hits == 1 and ft.sleeps == []
        assert failed == [("fp1-1", "pd", "http 400: scripted")]
        [row] = ledger.take_rows()
        assert (row["outcome"], row["attempts"]) == ("failed", 1)
        assert row["detail"] == "http 400: scripted"
        assert not ledger.delivered("pd", "fp1-1", "firing")
        assert d.stats()["pd"]["failed"] == 1 and d.stats()["pd"]["retries"] == 0

    run(main())


def test_receiver_down_then_back_gets_the_alert_exactly_once() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        port = server.port
        await server.stop()  # connection refused from now on
        d = dispatcher([pagerduty(server)], FakeTime())
        await d.start()
        future = await d.submit([alert()])
        await until(lambda: d.stats()["pd"]["retries"] >= 3)
        assert not future.done()
        await server.start(port)
        await future
        await d.stop(drain_s=1)
        await server.stop()
        assert len(server.accepted) == 1 and server.hits == 1
        assert d.stats()["pd"]["sent"] == 1 and d.stats()["pd"]["failed"] == 0

    run(main())


def test_a_receiver_gone_for_good_is_given_up_after_give_up_after_s() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty).start()
        await server.stop()
        ft, failed = FakeTime(), []
        rx = pagerduty(server, give_up_after_s=1.0, backoff_initial_s=0.3, backoff_max_s=0.3)
        d = dispatcher([rx], ft, on_failed=lambda a, r, why: failed.append(why))
        await d.start()
        await (await d.submit([alert()]))
        await d.stop(drain_s=1)
        # 0.3 + 0.3 + 0.3, then the last wait shortened to the time left (the clock is floats)
        assert sum(ft.sleeps) == pytest.approx(1.0, abs=1e-3)
        assert ft.sleeps[-1] == pytest.approx(0.1, abs=1e-3)
        assert len(failed) == 1
        assert failed[0].startswith("gave up after 5 attempts: ClientConnectorError")
        assert d.stats()["pd"]["failed"] == 1

    run(main())


def test_after_a_give_up_alerts_past_their_deadline_fail_without_new_retries() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty).start()
        await server.stop()
        ft, ledger, failed = FakeTime(), MemoryLedger(), []
        rx = pagerduty(server, give_up_after_s=1.0, backoff_initial_s=0.3, backoff_max_s=0.3)
        d = dispatcher([rx], ft, ledger=ledger,
                       on_failed=lambda a, r, why: failed.append((a.alert_id, why)))
        await d.start()
        futures = [await d.submit([alert(1)]), await d.submit([alert(2)])]  # same submit time
        await asyncio.gather(*futures)
        await d.stop(drain_s=1)
        # The queue behind a dead receiver drains within one give_up_after_s, not one each.
        assert sum(ft.sleeps) == pytest.approx(1.0, abs=1e-3)
        assert failed[1] == ("fp2-1", "gave up: receiver down")
        assert [r["attempts"] for r in ledger.take_rows()] == [5, 0]

    run(main())


def test_ledger_prevents_a_second_send_of_the_same_state() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        ledger = MemoryLedger()
        ledger.preload([("pd", "fp1-1", "firing")])  # delivered before a restart
        d = dispatcher([pagerduty(server)], FakeTime(), ledger=ledger)
        await d.start()
        done = alert(status="resolved")
        await (await d.submit([alert(), done]))
        await (await d.submit([alert(), done]))  # a replay of the same input
        await d.stop(drain_s=1)
        await server.stop()
        assert [b["event_action"] for b in server.accepted] == ["resolve"]
        assert d.stats()["pd"]["skipped"] == 3 and d.stats()["pd"]["sent"] == 1
        assert len(ledger.take_rows()) == 1

    run(main())


def test_firing_precedes_resolved_even_when_the_firing_is_retried() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        server.script.extend([(503, {}), (503, {})])
        d = dispatcher([pagerduty(server)], FakeTime())
        await d.start()
        first = await d.submit([alert()])
        second = await d.submit([alert(status="resolved")])
        await asyncio.gather(first, second)
        await d.stop(drain_s=1)
        await server.stop()
        assert [b["event_action"] for b in server.accepted] == ["trigger", "resolve"]

    run(main())


def test_submit_waits_while_the_queue_is_full_and_drops_nothing() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty, ok_status=202).start()
        server.gate = asyncio.Event()  # the receiver hangs until released
        d = dispatcher([pagerduty(server, timeout_s=30)], FakeTime(), queue_max=2)
        await d.start()
        futures = [await d.submit([alert(1)])]
        await until(lambda: server.hits == 1)  # the worker holds alert 1
        futures += [await d.submit([alert(2)]), await d.submit([alert(3)])]  # queue now full
        blocked = asyncio.create_task(d.submit([alert(4)]))
        await asyncio.sleep(0.05)
        assert not blocked.done() and d.stats()["pd"]["queued"] == 3
        server.gate.set()
        futures.append(await blocked)
        await asyncio.gather(*futures)
        await d.stop(drain_s=1)
        await server.stop()
        assert [b["payload"]["summary"] for b in server.accepted] == [
            "alert 1", "alert 2", "alert 3", "alert 4"]

    run(main())


def test_alertmanager_posts_batches_of_at_most_batch_max() -> None:
    async def main() -> None:
        server = await Server(check_alertmanager).start()
        rx = AlertmanagerReceiver(name="am", url=server.url, batch_max=2, resend_s=3600, **FAST)
        d = dispatcher([rx], FakeTime(cap=1.0))
        await d.start()
        await (await d.submit([alert(n) for n in range(1, 6)]))
        await d.stop(drain_s=1)
        await server.stop()
        assert server.problems == []
        assert [len(b) for b in server.accepted] == [2, 2, 1]
        assert [a["labels"]["fingerprint"] for b in server.accepted for a in b] == [
            "fp1", "fp2", "fp3", "fp4", "fp5"]

    run(main())


def test_alertmanager_gets_its_headers_and_the_mapped_severity() -> None:
    def check(request: web.Request, body: Any) -> list[str]:
        auth = request.headers.get("Authorization")
        return check_alertmanager(request, body) + ([] if auth == "Basic dTpw" else ["auth"])

    async def main() -> None:
        server = await Server(check).start()
        rx = AlertmanagerReceiver(name="am", url=server.url, resend_s=3600,
                                  headers={"Authorization": "Basic dTpw"}, **FAST)
        d = dispatcher([rx], FakeTime(cap=1.0))
        await d.start()
        await (await d.submit([alert(1, severity="page"), alert(2, severity="ticket")]))
        await d.stop(drain_s=1)
        await server.stop()
        assert server.problems == []
        assert [(a["labels"]["severity"], a["labels"]["trainguard_severity"])
                for b in server.accepted for a in b] == [("critical", "page"),
                                                         ("warning", "ticket")]

    run(main())


def test_alertmanager_never_puts_two_states_of_one_alert_in_one_post() -> None:
    async def main() -> None:
        server = await Server(check_alertmanager).start()
        rx = AlertmanagerReceiver(name="am", url=server.url, resend_s=3600, **FAST)
        ft = FakeTime(cap=1.0)
        d = dispatcher([rx], ft)
        await d.start()
        await (await d.submit([alert(1), alert(2), alert(1, status="resolved")]))
        await d.stop(drain_s=1)
        await server.stop()
        assert server.problems == []
        assert [[a["labels"]["fingerprint"] for a in b] for b in server.accepted] == [
            ["fp1", "fp2"], ["fp1"]]
        ends = datetime.fromisoformat(server.accepted[1][0]["endsAt"]).timestamp()
        assert ends <= ft.now  # the second POST resolves it

    run(main())


def test_alertmanager_firing_alerts_are_resent_until_resolved() -> None:
    async def main() -> None:
        server = await Server(check_alertmanager).start()
        rx = AlertmanagerReceiver(name="am", url=server.url, resend_s=30, **FAST)
        ft, ledger = FakeTime(cap=0.01), MemoryLedger()
        d = dispatcher([rx], ft, ledger=ledger)
        await d.start()
        await (await d.submit([alert(1), alert(2)]))
        await until(lambda: d.stats()["am"]["resent"] >= 4)
        resends = [b for b in server.accepted[1:] if len(b) == 2]
        ends = [datetime.fromisoformat(b[0]["endsAt"]).timestamp() for b in resends]
        assert ends == sorted(ends) and ends[-1] > ends[0]  # a fresh endsAt every time
        await (await d.submit([alert(1, status="resolved")]))
        mark = len(server.accepted)
        resent = d.stats()["am"]["resent"]
        await until(lambda: d.stats()["am"]["resent"] >= resent + 2)
        await d.stop(drain_s=1)
        await server.stop()
        assert server.problems == []
        later = [a["labels"]["fingerprint"] for b in server.accepted[mark:] for a in b]
        assert later and set(later) == {"fp2"}
        assert [r["status"] for r in ledger.take_rows()] == ["firing", "firing", "resolved"]

    run(main())


def test_routing_by_severity_and_resolved_follows_its_firing() -> None:
    async def main() -> None:
        pd_s = await Server(check_pagerduty, ok_status=202).start()
        slack_s = await Server(check_slack).start()
        hook_s = await Server(check_webhook).start()
        receivers: list[ReceiverConfig] = [
            pagerduty(pd_s),
            SlackReceiver(name="slack", url=f"{slack_s.url}/services/x", **FAST),
            WebhookReceiver(name="hook", url=f"{hook_s.url}/in",
                            headers={"Authorization": "Bearer t"}, **FAST),
        ]
        d = dispatcher(receivers, FakeTime())
        await d.start()
        await (await d.submit([alert(1, severity="page"), alert(2, severity="ticket"),
                               alert(3, severity="info")]))
        # Resolutions whose severity differs from their firing still go where it went.
        await (await d.submit([alert(1, status="resolved", severity="ticket"),
                               alert(2, status="resolved", severity="page")]))
        await d.stop(drain_s=1)
        for s in (pd_s, slack_s, hook_s):
            await s.stop()
            assert s.problems == []
        assert [(b["dedup_key"], b["event_action"]) for b in pd_s.accepted] == [
            ("fp1", "trigger"), ("fp1", "resolve")]
        assert [b["text"].split("]")[0] for b in slack_s.accepted] == [
            "[FIRING critical", "[FIRING warning", "[RESOLVED", "[RESOLVED"]
        assert [(b["alert"]["alert_id"], b["alert"]["status"]) for b in hook_s.accepted] == [
            ("fp1-1", "firing"), ("fp2-1", "firing"), ("fp3-1", "firing"),
            ("fp1-1", "resolved"), ("fp2-1", "resolved")]

    run(main())


def test_stop_cancels_the_future_of_undelivered_alerts() -> None:
    async def main() -> None:
        server = await Server(check_pagerduty).start()
        await server.stop()
        d = dispatcher([pagerduty(server)], FakeTime())
        await d.start()
        future = await d.submit([alert()])
        await d.stop(drain_s=0.05)
        assert future.cancelled() and d.stats()["pd"]["sent"] == 0

    run(main())


def test_submit_for_no_receiver_completes_at_once() -> None:
    async def main() -> None:
        d = dispatcher([PagerDutyReceiver(name="pd", routing_key=KEY)], FakeTime())
        await d.start()
        future = await d.submit([alert(severity="info")])
        assert future.done()
        await d.stop(drain_s=0)

    run(main())


def test_duplicate_receiver_names_are_rejected() -> None:
    pd = PagerDutyReceiver(name="x", routing_key=KEY)
    with pytest.raises(ConfigError, match="duplicate receiver name"):
        Dispatcher([pd, pd], MemoryLedger())


def test_memory_ledger_forgets_the_oldest_keys_and_bounds_rows() -> None:
    ledger = MemoryLedger(max_keys=2, max_rows=2)
    ledger.preload([("r", "a", "firing"), ("r", "b", "firing")])
    for n in (1, 2, 3):
        ledger.record("r", alert(n), "delivered", 1, "http 200", at=T0 + n)
    assert not ledger.delivered("r", "a", "firing") and not ledger.delivered("r", "fp1-1", "firing")
    assert ledger.delivered("r", "fp3-1", "firing")
    assert [r["alert_id"] for r in ledger.take_rows()] == ["fp2-1", "fp3-1"]
    assert ledger.dropped_rows == 1
