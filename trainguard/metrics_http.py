"""Serving a Prometheus registry on ``/metrics``: shared by the worker and the agent.

prometheus_client's own HTTP server (a daemon thread), wrapped so the caller can stop it
and learn the port the system chose when asked for port 0. Also the one default address
and port check of both deployables' configurations.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from trainguard.errors import ConfigError

if TYPE_CHECKING:  # imported when a server starts: configs and the CLI stay light
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_METRICS_ADDR", "MetricsServer", "check_metrics_port", "serve_metrics"]

log = logging.getLogger(__name__)

#: Where ``/metrics`` listens when only a port is given: every interface, as node_exporter
#: and dcgm-exporter do, so a Prometheus server on another host can scrape it. The page
#: is read-only and holds counters, no secrets; bind ``127.0.0.1`` where a local agent
#: (Grafana Alloy, an OpenTelemetry collector) scrapes instead.
DEFAULT_METRICS_ADDR = "0.0.0.0"


def check_metrics_port(name: str, port: int | None) -> None:
    """Reject a port outside 0..65535 (0: any free port), naming the setting."""
    if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"{name}={port!r}; expected a TCP port 0..65535 (0: any free port)")


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose, when asked for 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, port: int,
                  addr: str = DEFAULT_METRICS_ADDR) -> MetricsServer:
    """Serve ``registry`` on ``http://addr:port/metrics`` from a daemon thread."""
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {exc.strerror}") from None
    served = MetricsServer(server, thread)
    log.info("metrics served addr=%s port=%d path=/metrics", addr, served.port)
    return served
