"""Alert delivery: one asyncio worker per receiver, retries, a ledger, Alertmanager re-sends.

:meth:`Dispatcher.submit` routes each alert to the receivers whose ``min_severity``
admits it (a resolved alert follows its firing state) and returns a future that completes
once every receiver delivered, or gave up on, every alert of the call: the caller holds
its Kafka offsets until then, so delivery is at-least-once. The ledger makes it
effectively once: a worker skips an ``(alert_id, status)`` already delivered to its
receiver, so a replay after a crash pages nobody twice.

Each receiver's queue is FIFO (a firing state goes out before its resolution) and
bounded: when full, ``submit`` waits, it never drops. Transient failures (connection
errors, timeouts, 408, 429, 5xx) are retried with exponential backoff and jitter,
honouring ``Retry-After``, for up to ``give_up_after_s``; other 4xx fail at once. Failures
are recorded in the ledger and handed to ``on_failed`` (the app makes them dead letters).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp
import msgspec

from trainguard.errors import ConfigError
from trainguard.pipeline.alerts.ledger import DeliveryLedger, MemoryLedger, Outcome
from trainguard.pipeline.alerts.payloads import build_body
from trainguard.pipeline.alerts.receivers import (
    AlertmanagerReceiver,
    ReceiverConfig,
    WebhookReceiver,
)
from trainguard.schemas.records import Alert

# The ledger itself lives in trainguard.pipeline.alerts.ledger.
__all__ = ["DeliveryLedger", "Dispatcher", "MemoryLedger"]

log = logging.getLogger(__name__)

FailedCallback = Callable[[Alert, str, str], None]

#: Alerts waiting per receiver before ``submit`` waits: minutes of a cluster-wide storm.
QUEUE_MAX: Final = 10_000
#: Remembered routes of firing alerts and Alertmanager alerts kept alive by re-sends;
#: beyond these the oldest are forgotten (and only a cluster failing everywhere gets there).
ROUTES_MAX: Final = 200_000
RESEND_MAX: Final = 100_000
_ERROR_TEXT_MAX: Final = 200


@dataclass(eq=False)  # identity: each submit is its own, and it lives in a set
class _Pending:
    """One ``submit`` call: its future completes when ``left`` reaches zero."""

    future: asyncio.Future[None]
    left: int

    def finish(self) -> None:
        self.left -= 1
        if self.left <= 0 and not self.future.done():
            self.future.set_result(None)


@dataclass(frozen=True)
class _Item:
    alert: Alert
    pending: _Pending
    since: float  # wall time of submit: the give-up clock starts here


@dataclass(frozen=True)
class _Result:
    ok: bool
    attempts: int
    detail: str
    gave_up: bool = False


class Dispatcher:
    """Delivers alerts to receivers; see the module docstring for the guarantees."""

    def __init__(
        self, receivers: Sequence[ReceiverConfig], ledger: DeliveryLedger, *,
        session: aiohttp.ClientSession | None = None, on_failed: FailedCallback | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random, queue_max: int = QUEUE_MAX,
    ) -> None:
        names = [r.name for r in receivers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"duplicate receiver name(s): {', '.join(dupes)}")
        self.receivers = tuple(receivers)
        self._ledger, self._on_failed = ledger, on_failed
        self._clock, self._sleep, self._rng = clock, sleep, rng
        self._session, self._own_session = session, session is None
        self._queues = {n: asyncio.Queue[_Item](maxsize=queue_max) for n in names}
        self._carry: dict[str, deque[_Item]] = {n: deque() for n in names}
        self._locks = {n: asyncio.Lock() for n in names}
        self._firing: dict[str, OrderedDict[str, Alert]] = {n: OrderedDict() for n in names}
        self._routes: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._pending: set[_Pending] = set()
        self._down: dict[str, bool] = dict.fromkeys(names, False)  # the last batch gave up
        self._tasks: list[asyncio.Task[None]] = []
        keys = ("sent", "retries", "failed", "queued", "resent", "skipped")
        self.counters: dict[str, dict[str, int]] = {n: dict.fromkeys(keys, 0) for n in names}

    async def start(self) -> None:
        """Open the HTTP session (unless one was given) and start one worker per receiver."""
        if self._tasks:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for rx in self.receivers:
            self._tasks.append(asyncio.create_task(self._work(rx), name=f"deliver-{rx.name}"))
            if isinstance(rx, AlertmanagerReceiver):
                self._tasks.append(asyncio.create_task(self._resend(rx), name=f"resend-{rx.name}"))

    async def stop(self, drain_s: float = 10.0) -> None:
        """Wait up to ``drain_s`` for the queues to empty, then stop the workers.

        Futures of submits not fully delivered by then are cancelled: their offsets stay
        uncommitted, the alerts are replayed after restart and the ledger skips the
        states already delivered.
        """
        try:
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self._queues.values())), drain_s
            )
        except TimeoutError:
            left = {n: c["queued"] for n, c in self.counters.items() if c["queued"]}
            log.warning("delivery stopped before the queues drained queued=%s", left)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for pending in self._pending:
            pending.future.cancel()
        self._pending.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def submit(self, alerts: Sequence[Alert]) -> asyncio.Future[None]:
        """Enqueue ``alerts`` for their receivers; wait only while a queue is full.

        Returns a future that completes when every receiver delivered or gave up on
        every one of ``alerts``; hold the input's offsets until it is done.
        """
        if not self._tasks:
            raise RuntimeError("Dispatcher.submit before start()")
        plan = [(alert, self._route(alert)) for alert in alerts]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = _Pending(future, sum(len(names) for _, names in plan))
        if pending.left == 0:
            future.set_result(None)
            return future
        self._pending.add(pending)
        future.add_done_callback(lambda _: self._pending.discard(pending))
        since = self._clock()
        for alert, names in plan:
            for name in names:
                await self._queues[name].put(_Item(alert, pending, since))
                self.counters[name]["queued"] += 1
        return future

    def stats(self) -> dict[str, dict[str, int]]:
        """A copy of the per-receiver counters: sent, retries, failed, queued, resent, skipped."""
        return {name: dict(c) for name, c in self.counters.items()}

    # -- routing -----------------------------------------------------------------------

    def _route(self, alert: Alert) -> tuple[str, ...]:
        if alert.status == "firing":
            names = tuple(r.name for r in self.receivers if r.admits(alert.severity))
            self._routes[alert.alert_id] = names
            self._routes.move_to_end(alert.alert_id)
            while len(self._routes) > ROUTES_MAX:
                self._routes.popitem(last=False)
            return names
        known = self._routes.pop(alert.alert_id, None)
        if known is not None:
            return known  # exactly where the firing went, whatever the resolved severity
        # Forgotten (a restart): where the severity leads, plus wherever the firing got.
        return tuple(
            r.name for r in self.receivers
            if r.admits(alert.severity) or self._ledger.delivered(r.name, alert.alert_id, "firing")
        )

    # -- the worker --------------------------------------------------------------------

    async def _work(self, rx: ReceiverConfig) -> None:
        queue = self._queues[rx.name]
        while True:
            batch = await self._next_batch(rx)
            async with self._locks[rx.name]:
                todo = [item.alert for item in batch if not self._skip(rx, item.alert)]
                deadline = min(item.since for item in batch) + rx.give_up_after_s
                if todo and self._down[rx.name] and self._clock() >= deadline:
                    # The receiver outlived the previous batch's deadline too: fail at once,
                    # so that a receiver gone for good drains its queue in bounded time.
                    self._settle(rx, todo, _Result(False, 0, "gave up: receiver down", True))
                elif todo:
                    result = await self._send(rx, todo, deadline=deadline)
                    self._down[rx.name] = result.gave_up
                    self._settle(rx, todo, result)
            # Only now, never on cancellation: a future done means "safe to commit".
            for item in batch:
                self.counters[rx.name]["queued"] -= 1
                item.pending.finish()
                queue.task_done()

    async def _next_batch(self, rx: ReceiverConfig) -> list[_Item]:
        queue, carry = self._queues[rx.name], self._carry[rx.name]
        batch = [carry.popleft() if carry else await queue.get()]
        if not isinstance(rx, AlertmanagerReceiver):
            return batch
        seen = {batch[0].alert.fingerprint}
        while len(batch) < rx.batch_max:
            if carry:
                item = carry.popleft()
            else:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if item.alert.fingerprint in seen:
                # Two states of one alert in one POST would leave their order to
                # Alertmanager; the second waits for the next batch instead.
                carry.appendleft(item)
                break
            seen.add(item.alert.fingerprint)
            batch.append(item)
        return batch

    def _skip(self, rx: ReceiverConfig, alert: Alert) -> bool:
        if not self._ledger.delivered(rx.name, alert.alert_id, alert.status):
            return False
        self.counters[rx.name]["skipped"] += 1
        log.info("alert state already delivered receiver=%s alert_id=%s status=%s",
                 rx.name, alert.alert_id, alert.status)
        if isinstance(rx, AlertmanagerReceiver) and alert.status == "firing" and not (
            self._ledger.delivered(rx.name, alert.alert_id, "resolved")
        ):
            self._keep_alive(rx, alert)  # a replay: Alertmanager still needs the re-sends
        return True

    def _settle(self, rx: ReceiverConfig, alerts: list[Alert], result: _Result) -> None:
        at = self._clock()  # wall time of completion: the latency measurement's end
        outcome: Outcome = "delivered" if result.ok else "failed"
        counter = self.counters[rx.name]
        for alert in alerts:
            counter["sent" if result.ok else "failed"] += 1
            if isinstance(rx, AlertmanagerReceiver):
                if alert.status == "firing" and result.ok:
                    self._keep_alive(rx, alert)
                elif alert.status == "resolved":
                    # Delivered or not, re-sending the firing would contradict the data.
                    current = self._firing[rx.name].get(alert.fingerprint)
                    if current is not None and current.alert_id == alert.alert_id:
                        del self._firing[rx.name][alert.fingerprint]
            log.log(logging.INFO if result.ok else logging.WARNING,
                    "alert %s receiver=%s alert_id=%s status=%s attempts=%d detail=%s", outcome,
                    rx.name, alert.alert_id, alert.status, result.attempts, result.detail)
            # The ledger and the callback belong to the app: their errors must not stop
            # this worker (its queue would never drain), so they are logged and passed.
            try:
                self._ledger.record(rx.name, alert, outcome, result.attempts, result.detail, at)
            except Exception:
                log.exception("ledger record failed receiver=%s alert_id=%s",
                              rx.name, alert.alert_id)
            if not result.ok and self._on_failed is not None:
                try:
                    self._on_failed(alert, rx.name, result.detail)
                except Exception:
                    log.exception("on_failed raised receiver=%s alert_id=%s",
                                  rx.name, alert.alert_id)

    def keep_alive(self, alerts: Sequence[Alert]) -> int:
        """Re-send these firing alerts to the Alertmanager receivers that got them.

        After a restart the dispatcher no longer knows which delivered alerts are still
        firing; without this Alertmanager would resolve them at their ``endsAt``. Returns
        how many (alert, receiver) pairs are now kept alive.
        """
        n = 0
        for alert in alerts:
            if alert.status != "firing":
                continue
            for rx in self.receivers:
                if isinstance(rx, AlertmanagerReceiver) and self._ledger.delivered(
                        rx.name, alert.alert_id, "firing"):
                    self._keep_alive(rx, alert)
                    n += 1
        return n

    def _keep_alive(self, rx: AlertmanagerReceiver, alert: Alert) -> None:
        firing = self._firing[rx.name]
        firing.pop(alert.fingerprint, None)
        firing[alert.fingerprint] = alert
        while len(firing) > RESEND_MAX:
            _, old = firing.popitem(last=False)
            log.warning("alertmanager re-send forgotten receiver=%s alert_id=%s",
                        rx.name, old.alert_id)

    async def _resend(self, rx: AlertmanagerReceiver) -> None:
        """Re-POST delivered, unresolved alerts every ``resend_s`` with a fresh ``endsAt``."""
        while True:
            await self._sleep(rx.resend_s)
            # Under the worker's lock, so a resolution cannot be overtaken by a re-send.
            async with self._locks[rx.name]:
                active = list(self._firing[rx.name].values())
                for i in range(0, len(active), rx.batch_max):
                    chunk = active[i: i + rx.batch_max]
                    result = await self._send(rx, chunk, deadline=None)
                    if not result.ok:  # the next round tries again; no ledger rows
                        log.warning("alertmanager re-send failed receiver=%s alerts=%d "
                                    "reason=%s", rx.name, len(chunk), result.detail)
                        break
                    self.counters[rx.name]["resent"] += len(chunk)

    # -- HTTP --------------------------------------------------------------------------

    async def _send(
        self, rx: ReceiverConfig, alerts: list[Alert], *, deadline: float | None
    ) -> _Result:
        """POST ``alerts``, retrying transient failures until ``deadline`` (None: once)."""
        backoff = rx.backoff_initial_s
        attempts = 0
        while True:
            attempts += 1
            try:
                # Rebuilt per attempt: after an outage, Alertmanager needs a fresh endsAt.
                body = msgspec.json.encode(build_body(rx, alerts, self._clock()))
                verdict, detail, retry_after = await self._post(rx, body)
            except Exception as exc:  # a bug must fail these alerts, not kill the worker
                log.exception("alert delivery error receiver=%s", rx.name)
                return _Result(False, attempts, f"error: {exc!r}")
            if verdict != "retry" or deadline is None:
                return _Result(verdict == "ok", attempts, detail)
            left = deadline - self._clock()
            if left <= 0:
                return _Result(False, attempts, f"gave up after {attempts} attempts: {detail}",
                               gave_up=True)
            # Jitter spreads the retries of many workers after a shared outage.
            delay = retry_after if retry_after is not None else backoff * (0.5 + self._rng() / 2)
            backoff = min(backoff * 2, rx.backoff_max_s)
            self.counters[rx.name]["retries"] += 1
            log.info("alert delivery retry receiver=%s attempt=%d delay_s=%.2f reason=%s",
                     rx.name, attempts, min(delay, left), detail)
            await self._sleep(min(delay, left))

    async def _post(
        self, rx: ReceiverConfig, body: bytes
    ) -> tuple[Literal["ok", "retry", "permanent"], str, float | None]:
        assert self._session is not None, "Dispatcher not started"
        headers = {"Content-Type": "application/json"}
        if isinstance(rx, WebhookReceiver | AlertmanagerReceiver):
            headers.update(rx.headers)
        try:
            async with self._session.post(
                rx.endpoint, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=rx.timeout_s),
            ) as resp:
                status = resp.status
                # Read whole (receivers answer in bytes), so the connection can be reused.
                text = (await resp.read())[:_ERROR_TEXT_MAX].decode(errors="replace")
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "retry", f"{type(exc).__name__}: {exc}", None
        if 200 <= status < 300:
            return "ok", f"http {status}", None
        detail = f"http {status}: {text.strip()}"
        if status in (408, 429) or status >= 500:
            return "retry", detail, retry_after
        return "permanent", detail, None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; the HTTP-date form falls back to backoff."""
    try:
        seconds = float(value.strip()) if value is not None else -1.0
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
