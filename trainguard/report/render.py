"""A report from start to end: :func:`render_report` runs the other parts in turn.

It finds the incident (:mod:`.incident`), queries and draws each timeseries panel of
the job dashboard (:mod:`.query`, :mod:`.draw`), and writes the page (:mod:`.page`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainguard.errors import ConfigError, StoreError
from trainguard.grafana.model import Dashboard
from trainguard.report.draw import PanelImage, draw_panel
from trainguard.report.incident import Incident, alert_incident, job_incident
from trainguard.report.page import page_html
from trainguard.report.query import job_dashboard, panel_variables, query_series

if TYPE_CHECKING:
    from trainguard.pipeline.store.base import Store

__all__ = ["ReportResult", "render_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`render_report` wrote."""

    html: Path
    panels: tuple[PanelImage, ...]
    incident: Incident

    @property
    def images(self) -> tuple[Path, ...]:
        """The PNGs, in panel order."""
        return tuple(p.path for p in self.panels)


def render_report(
    store: Store, *, out_dir: Path, alert_id: str | None = None, job_id: str | None = None,
    start: float | None = None, end: float | None = None, node: str | None = None,
    rank: int | None = None, dashboards: Sequence[Dashboard] | None = None,
) -> ReportResult:
    """Draw the job dashboard's timeseries panels for an alert, or a job and time range.

    With ``alert_id`` the range is first seen - 5 min .. (resolved or last seen) + 5 min
    and the blamed node and rank come from the alert; otherwise ``job_id``, ``start``
    and ``end`` are required, and ``node``/``rank`` (optional) are highlighted.
    ``dashboards`` defaults to :func:`trainguard.grafana.dashboards.all_dashboards`.
    Raises :class:`ConfigError` for an unknown alert or bad arguments.
    """
    if alert_id is not None:
        if job_id is not None or start is not None or end is not None:
            raise ConfigError("give either alert_id or job_id with start and end, not both")
        incident = alert_incident(store, alert_id)
    else:
        if job_id is None or start is None or end is None:
            raise ConfigError("a report needs alert_id, or job_id with start and end")
        incident = job_incident(store, job_id, start, end, node, rank)
    board = job_dashboard(dashboards)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for i, panel in enumerate((p for p in board.panels if p.kind == "timeseries"), 1):
        path = out_dir / f"{i:02d}-{_slug(panel.title)}.png"
        note = None
        try:
            series = query_series(store, panel, incident, panel_variables(incident, panel, board))
        except (StoreError, ConfigError) as exc:
            # One broken panel must not cost the postmortem the others: draw what failed.
            log.warning("report panel failed panel=%r error=%s", panel.title, exc)
            series, note = [], f"query failed: {exc}"
        images.append(draw_panel(path, panel, series, incident, note=note))
    page = out_dir / "report.html"
    page.write_text(page_html(incident, images), encoding="utf-8")
    return ReportResult(html=page, panels=tuple(images), incident=incident)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "panel"
