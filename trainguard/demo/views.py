"""What the demo leaves for an SRE to look at: dashboards, their check, incident reports.

At the end of a run, while the worker still serves the store: the four dashboards are
rendered for the demo's database into the data directory (import them into Grafana, or
provision ``infra/grafana/``), every panel's SQL is run against this run's data (the check
Grafana would do on opening them), and each alert the run raised gets an incident report
(PNG per panel plus one HTML page, ``trainguard report``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from trainguard.pipeline.store import Store

__all__ = ["write_views"]

log = logging.getLogger(__name__)

#: Margin around the run's event time for the dashboards' time range.
_MARGIN_S = 120.0


def write_views(store: Store, data_dir: Path, *, cluster: str, job_id: str, start: float,
                end: float, out: Callable[[str], None]) -> bool:
    """Write dashboards and reports under ``data_dir``; True when every query passes.

    A panel passes with data (or empty, where it may be); an annotation passes empty.
    """
    from trainguard.grafana.dashboards import all_dashboards
    from trainguard.grafana.render import write_all
    from trainguard.grafana.verify import failures, verify
    from trainguard.report import render_report

    boards = all_dashboards()
    paths = write_all(data_dir / "grafana" / "dashboards", dashboards=boards,
                      database=store.database)
    checks = verify(store, boards, start=start - _MARGIN_S, end=end + _MARGIN_S,
                    variables={"cluster": cluster, "job": job_id})
    bad = failures(checks)
    out(f"[demo] dashboards: {len(paths)} written to {paths[0].parent} "
        f"({len(checks) - len(bad)}/{len(checks)} panel, variable and annotation queries "
        "pass for this run)")
    for check in bad:
        out(f"[demo]   panel {check.dashboard} / {check.panel}: {check.status}")
    rows = store.query(
        "SELECT DISTINCT alert_id FROM {database}.alerts FINAL "
        f"WHERE cluster = '{cluster}' AND status = 'firing' ORDER BY alert_id").rows
    for (alert_id,) in rows:
        try:
            result = render_report(store, out_dir=data_dir / "reports" / str(alert_id),
                                   alert_id=str(alert_id), dashboards=boards)
        except Exception as exc:  # a report is a bonus; the run's verdict does not hang on it
            log.warning("incident report failed alert_id=%s error=%s", alert_id, exc)
            out(f"[demo] incident report for {alert_id} failed: {exc}")
            continue
        out(f"[demo] incident report for alert {alert_id}: {result.html} "
            f"({len(result.images)} panels)")
    return not bad
