"""A local HTTP endpoint that records the webhooks POSTed to it, Alertmanager's above all.

Tests, the demo and the notification-latency benchmark point an Alertmanager (or any
webhook sender) at a :class:`RecordingWebhookServer`: an ``http.server`` on 127.0.0.1 in a
background thread that records every POST (path, headers, body, wall-clock arrival
time) and parses Alertmanager's webhook payload (version "4") into
:class:`AlertmanagerNotification`. Outages are simulated two ways: :meth:`stop` then
:meth:`start` again on the same port (connection refused meanwhile), or
:meth:`respond_with` to answer e.g. 503 for a while (the sender gets an error reply).

>>> with RecordingWebhookServer() as rx:  # doctest: +SKIP
...     ...  # point a sender at rx.url_for("/pager"), e.g. a LocalAlertmanager
...     req = rx.wait_for_notification(lambda n: n.status == "firing", timeout=10)
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from trainguard.errors import TrainguardError

__all__ = [
    "AlertmanagerAlert",
    "AlertmanagerNotification",
    "ReceivedRequest",
    "RecordingWebhookServer",
    "parse_timestamp",
]

log = logging.getLogger(__name__)

#: Alertmanager's webhook payload version this parser understands.
PAYLOAD_VERSION = "4"

# Go writes nanoseconds; datetime takes at most microseconds.
_FRACTION_RE = re.compile(r"(\.\d{6})\d+")
# Go's zero time.Time: what Alertmanager sends as endsAt for an alert with no end yet.
_GO_ZERO_YEAR = 1
# How many received requests a wait_for() timeout message lists.
_DESCRIBE_LAST = 20


def parse_timestamp(value: str) -> datetime | None:
    """Parse an RFC 3339 timestamp from Alertmanager into an aware datetime.

    Returns ``None`` for Go's zero time (``0001-01-01T00:00:00Z``), which Alertmanager
    uses for "no end time". Raises ``ValueError`` on anything else that is not RFC 3339.
    """
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is not a string")
    text = _FRACTION_RE.sub(r"\1", value.strip())
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone; expected RFC 3339")
    return None if parsed.year == _GO_ZERO_YEAR else parsed


def _str_map(obj: Any, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ValueError(f"{what} must map strings to strings, got {obj!r}")
    return dict(obj)


@dataclass(frozen=True)
class AlertmanagerAlert:
    """One alert inside an Alertmanager webhook notification."""

    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    #: ``None`` while the alert has no known end (Go's zero time on the wire).
    ends_at: datetime | None
    generator_url: str
    #: Alertmanager's own fingerprint (a hash of the label set), not trainguard's.
    fingerprint: str

    @classmethod
    def from_json(cls, obj: Any) -> AlertmanagerAlert:
        """Build from one element of the payload's ``alerts`` list; ``ValueError`` if malformed."""
        if not isinstance(obj, dict):
            raise ValueError(f"alert must be a JSON object, got {type(obj).__name__}")
        status = obj.get("status")
        if status not in ("firing", "resolved"):
            raise ValueError(f"alert status {status!r}; expected 'firing' or 'resolved'")
        return cls(
            status=status,
            labels=_str_map(obj.get("labels"), "alert labels"),
            annotations=_str_map(obj.get("annotations"), "alert annotations"),
            starts_at=parse_timestamp(obj.get("startsAt", "0001-01-01T00:00:00Z")),
            ends_at=parse_timestamp(obj.get("endsAt", "0001-01-01T00:00:00Z")),
            generator_url=str(obj.get("generatorURL", "")),
            fingerprint=str(obj.get("fingerprint", "")),
        )


@dataclass(frozen=True)
class AlertmanagerNotification:
    """Alertmanager's webhook payload (``version`` "4"): one group's alerts, one receiver."""

    version: str
    #: ``firing`` if at least one alert in ``alerts`` fires, else ``resolved``.
    status: str
    receiver: str
    group_key: str
    truncated_alerts: int
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: tuple[AlertmanagerAlert, ...]

    @classmethod
    def from_json(cls, obj: Any) -> AlertmanagerNotification:
        """Build from a decoded webhook body; ``ValueError`` names what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError(f"payload must be a JSON object, got {type(obj).__name__}")
        version = obj.get("version")
        if version != PAYLOAD_VERSION:
            raise ValueError(f"payload version {version!r}; expected {PAYLOAD_VERSION!r}")
        alerts = obj.get("alerts")
        if not isinstance(alerts, list):
            raise ValueError(f"payload 'alerts' must be a list, got {alerts!r}")
        status = obj.get("status")
        if status not in ("firing", "resolved"):
            raise ValueError(f"payload status {status!r}; expected 'firing' or 'resolved'")
        truncated = obj.get("truncatedAlerts", 0)
        if isinstance(truncated, bool) or not isinstance(truncated, int):
            raise ValueError(f"payload truncatedAlerts {truncated!r}; expected an integer")
        return cls(
            version=version,
            status=status,
            receiver=str(obj.get("receiver", "")),
            group_key=str(obj.get("groupKey", "")),
            truncated_alerts=truncated,
            group_labels=_str_map(obj.get("groupLabels"), "groupLabels"),
            common_labels=_str_map(obj.get("commonLabels"), "commonLabels"),
            common_annotations=_str_map(obj.get("commonAnnotations"), "commonAnnotations"),
            external_url=str(obj.get("externalURL", "")),
            alerts=tuple(AlertmanagerAlert.from_json(a) for a in alerts),
        )


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST as the receiver saw it, and what it answered."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    #: Wall-clock arrival time (``time.time()``, or the injected clock), after the body
    #: was read: comparable with a sender's ``time.time()`` on the same host.
    received_at: float
    #: The HTTP status the receiver answered (see :meth:`RecordingWebhookServer.respond_with`).
    status_code: int
    #: The decoded JSON body, or ``None`` if the body was not JSON.
    json: Any = None
    #: The body as an Alertmanager notification, or ``None`` if it is not one.
    notification: AlertmanagerNotification | None = None

    @property
    def accepted(self) -> bool:
        """True if the receiver answered 2xx, i.e. the sender considers it delivered."""
        return 200 <= self.status_code < 300


class RecordingWebhookServer:
    """Records webhook POSTs on ``127.0.0.1:<port>``; start/stop-able on the same port.

    ``port=0`` picks a free port on the first :meth:`start`, and later starts reuse it,
    so a sender configured with :attr:`url` finds the receiver again after a restart.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise TrainguardError(f"invalid webhook receiver port {port!r}; expected 0-65535")
        self._host = host
        self._port = port
        self._clock = clock
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._status = 200
        self._status_until: float | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Listen and serve in a daemon thread; no-op if already running."""
        if self._server is not None:
            return
        try:
            server = ThreadingHTTPServer((self._host, self._port), self._handler_class())
        except OSError as exc:
            raise TrainguardError(
                f"webhook receiver cannot listen on {self._host}:{self._port}: {exc}"
            ) from exc
        server.daemon_threads = True
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"webhook-receiver-{self._port}",
            daemon=True,
        )
        self._thread.start()
        log.info("webhook receiver listening url=%s", self.url)

    def stop(self) -> None:
        """Stop listening (senders get "connection refused"); recorded requests are kept."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        log.info("webhook receiver stopped port=%d", self._port)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    def __enter__(self) -> RecordingWebhookServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; 0 until the first :meth:`start` when constructed with ``port=0``."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>``."""
        if self._port == 0:
            raise TrainguardError("webhook receiver has no port yet; call start() first")
        return f"http://{self._host}:{self._port}"

    def url_for(self, path: str) -> str:
        """URL of ``path`` on this receiver (distinct paths tell receivers apart)."""
        return self.url + "/" + path.lstrip("/")

    # -- behaviour -------------------------------------------------------------------

    def respond_with(self, status: int, *, for_s: float | None = None) -> None:
        """Answer every POST with ``status`` (e.g. 503), for ``for_s`` seconds or until changed.

        ``respond_with(200)`` restores normal service at once.
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise TrainguardError(f"invalid HTTP status {status!r}; expected 200-599")
        if for_s is not None and not for_s > 0:
            raise TrainguardError(f"invalid duration for_s={for_s!r}; expected seconds > 0")
        with self._cond:
            self._status = status
            self._status_until = None if for_s is None else self._monotonic() + for_s

    def _current_status(self) -> int:
        with self._cond:
            if self._status_until is not None and self._monotonic() >= self._status_until:
                self._status, self._status_until = 200, None
            return self._status

    # -- what arrived ----------------------------------------------------------------

    def received(self) -> list[ReceivedRequest]:
        """Every POST so far, oldest first, including those answered with an error."""
        with self._cond:
            return list(self._requests)

    def notifications(self) -> list[AlertmanagerNotification]:
        """The Alertmanager notifications among the accepted (2xx) POSTs, oldest first."""
        return [
            r.notification for r in self.received() if r.accepted and r.notification is not None
        ]

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            self._requests.clear()

    def wait_for(
        self, predicate: Callable[[ReceivedRequest], bool], timeout: float = 10.0
    ) -> ReceivedRequest:
        """Return the first request (already received or arriving) that ``predicate`` accepts.

        Raises ``TimeoutError`` after ``timeout`` seconds, listing what did arrive.
        """
        deadline = self._monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for req in self._requests[seen:]:
                    if predicate(req):
                        return req
                seen = len(self._requests)
                remaining = deadline - self._monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            total = len(self._requests)
            summary = [_describe(r) for r in self._requests[-_DESCRIBE_LAST:]]
        shown = "" if total <= _DESCRIBE_LAST else f" (last {_DESCRIBE_LAST})"
        raise TimeoutError(
            f"no matching webhook within {timeout:g}s on {self._host}:{self._port}; "
            f"received {total}{shown}: {summary}"
        )

    def wait_for_notification(
        self,
        predicate: Callable[[AlertmanagerNotification], bool] = lambda n: True,
        timeout: float = 10.0,
    ) -> ReceivedRequest:
        """:meth:`wait_for` an accepted Alertmanager notification that ``predicate`` accepts."""
        return self.wait_for(
            lambda r: r.accepted and r.notification is not None and predicate(r.notification),
            timeout,
        )

    # -- the HTTP side ---------------------------------------------------------------

    def _record(self, path: str, headers: Mapping[str, str], body: bytes) -> int:
        """Store one POST and return the status to answer."""
        received_at = self._clock()
        status = self._current_status()
        decoded: Any = None
        notification: AlertmanagerNotification | None = None
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and "alerts" in decoded and "version" in decoded:
            try:
                notification = AlertmanagerNotification.from_json(decoded)
            except ValueError as exc:
                log.warning("malformed alertmanager payload path=%s error=%s", path, exc)
        req = ReceivedRequest(
            path=path,
            headers=dict(headers),
            body=body,
            received_at=received_at,
            status_code=status,
            json=decoded,
            notification=notification,
        )
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        log.debug("webhook received path=%s status=%d bytes=%d", path, status, len(body))
        return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so stop() leaves no kept-alive
            # connection behind that would still accept a sender's next request.
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # http.server dispatches on this name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                status = receiver._record(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                payload = b"ok\n" if status < 300 else b"simulated failure\n"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook http " + format, *args)

        return _Handler


def _describe(req: ReceivedRequest) -> str:
    if req.notification is None:
        return f"{req.path} -> {req.status_code} ({len(req.body)} bytes)"
    n = req.notification
    names = ",".join(a.labels.get("alertname", "?") + ":" + a.status for a in n.alerts)
    return f"{req.path} -> {req.status_code} {n.receiver}/{n.status} [{names}]"
