"""A report's HTML page: the incident's facts, the alert's evidence, and the panels' PNGs.

:func:`page_html` writes one self-contained page that embeds the images by relative
path, so the report's directory can be attached to a ticket as it is.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainguard.report.draw import PanelImage
    from trainguard.report.incident import Incident

__all__ = ["page_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1240px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0 20px} td,th{padding:3px 10px;text-align:left;
border-bottom:1px solid #e5e5e5;vertical-align:top} th{color:#555;font-weight:600}
.sev{display:inline-block;padding:1px 8px;border-radius:3px;color:#fff;background:#d62728}
.sev.ticket{background:#e6550d} .sev.info{background:#777}
figure{margin:0 0 24px} figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#555;font-size:13px} code{font-size:13px}
"""


def page_html(incident: Incident, panels: Sequence[PanelImage]) -> str:
    """The page of ``incident`` with ``panels``, as one HTML document."""
    e = html.escape
    alert = incident.alert
    facts: list[tuple[str, str]] = []
    head = f"<h1>{e(incident.title)}</h1>"
    if alert is not None:
        head = (f'<h1><span class="sev {e(alert.severity)}">{e(alert.severity)}</span> '
                f"{e(alert.check)} — {e(alert.status)}</h1><p class=sub>{e(alert.summary)}</p>")
        facts += [("alert", f"<code>{e(alert.alert_id)}</code>"),
                  ("fingerprint", f"<code>{e(alert.fingerprint)}</code>")]
    facts += [(k, e(str(v))) for k, v in (
        ("cluster", incident.cluster), ("job", incident.job_id), ("node", incident.node),
        ("rank", incident.rank), ("gpu", incident.gpu)) if v is not None]
    facts += [("first seen", _stamp(incident.first_seen)),
              ("last seen", _stamp(incident.last_seen)), ("resolved", _stamp(incident.resolved_at)),
              ("time range", f"{_stamp(incident.start)} – {_stamp(incident.end)}")]
    if alert is not None:
        for name, url in (("runbook", alert.runbook_url), ("dashboard", alert.dashboard_url)):
            if url and url.startswith(("https://", "http://")):  # never a javascript: link
                facts.append((name, f'<a href="{e(url)}">{e(url)}</a>'))
    parts = [head, "<table>", *(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in facts),
             "</table>"]
    if alert is not None and alert.evidence:
        parts += ["<h2>Evidence</h2><table>",
                  *(f"<tr><th>{e(k)}</th><td>{e(_cell(k, v))}</td></tr>"
                    for k, v in sorted(alert.evidence.items())), "</table>"]
    if alert is not None and alert.labels:
        parts += ["<h2>Labels</h2><table>",
                  *(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"
                    for k, v in sorted(alert.labels.items())), "</table>"]
    parts.append("<h2>Panels</h2>")
    for p in panels:
        parts.append(f'<figure><img src="{e(p.path.name)}" alt="{e(p.title)}" width="1200" '
                     f'height="450"><figcaption>{e(p.description)}</figcaption></figure>')
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{e(incident.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _cell(key: str, value: object) -> str:
    if key.endswith(("_seen", "_at")) and isinstance(value, int | float):
        return _stamp(value)  # evidence carries times as epoch seconds; people read clocks
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return "—" if value is None else str(value)


def _stamp(t: float | None) -> str:
    return "—" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
