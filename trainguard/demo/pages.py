"""The demo's on-call: a local webhook receiver, behind a real Alertmanager when installed.

The demo's :class:`~trainguard.local.stack.LocalStack` starts both (Alertmanager, the
Debian package, on 127.0.0.1 with the shipped route config, when it is installed). The
worker delivers its alerts to Alertmanager when it runs, else straight to the receiver
as trainguard's JSON webhook, and the demo prints the pages that arrived, as an on-call
engineer would get them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainguard.errors import TrainguardError
from trainguard.local.alertmanager import LocalAlertmanager
from trainguard.local.stack import LocalStack
from trainguard.local.webhook_server import RecordingWebhookServer

__all__ = ["GRAFANA_URL", "DemoPager"]

#: Where the demo's alerts point their dashboard links: Grafana's default local address.
GRAFANA_URL = "http://localhost:3000"


class DemoPager:
    """Write the worker's receiver config; read back the pages that reached the receiver."""

    def __init__(self, data_dir: Path, receiver: RecordingWebhookServer,
                 alertmanager: LocalAlertmanager | None = None) -> None:
        self.data_dir = data_dir
        self.receiver = receiver
        self.alertmanager = alertmanager

    @classmethod
    def of(cls, stack: LocalStack) -> DemoPager:
        """The pager of a stack started with ``pager="auto"`` (or any mode but ``off``)."""
        if stack.receiver is None:
            raise TrainguardError("the demo's stack runs no webhook receiver")
        return cls(stack.data_dir, stack.receiver, stack.alertmanager)

    def worker_config(self) -> Path:
        """The worker's TOML: one receiver, tickets and pages, fast retries for a demo."""
        if self.alertmanager is not None:
            rx = f'type = "alertmanager"\nname = "alertmanager"\nurl = "{self.alertmanager.url}"\n'
        else:
            rx = f'type = "webhook"\nname = "demo"\nurl = "{self.receiver.url_for("/webhook")}"\n'
        path = self.data_dir / "worker.toml"
        # Alerts link to the job dashboard on a local Grafana, where the demo's dashboards
        # can be imported (they are written next to this file).
        path.write_text("# written by trainguard demo\n[alerts]\nclear_hold_s = 30.0\n"
                        f'dashboard_base_url = "{GRAFANA_URL}"\n\n'
                        f'[[receivers]]\n{rx}min_severity = "ticket"\nbackoff_max_s = 5.0\n')
        return path

    def pages(self, cluster: str) -> list[dict[str, Any]]:
        """What reached the receiver for ``cluster``: status, severity, check, summary, link."""
        out: list[dict[str, Any]] = []
        for req in self.receiver.received():
            if not req.accepted:
                continue
            if req.notification is not None:
                for a in req.notification.alerts:
                    if a.labels.get("cluster") == cluster:
                        # trainguard's own severity: ``severity`` is the mapped one.
                        severity = a.labels.get("trainguard_severity", a.labels.get("severity"))
                        out.append({"status": a.status, "severity": severity,
                                    "check": a.labels.get("alertname"),
                                    "summary": a.annotations.get("summary", ""),
                                    "link": a.annotations.get("dashboard_url"),
                                    "at": req.received_at})
            elif isinstance(req.json, dict) and isinstance(req.json.get("alert"), dict):
                a = req.json["alert"]
                if a.get("cluster") == cluster:
                    out.append({"status": a.get("status"), "severity": a.get("severity"),
                                "check": a.get("check"), "summary": a.get("summary", ""),
                                "link": a.get("dashboard_url"), "at": req.received_at})
        return out
