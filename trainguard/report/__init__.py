"""A picture of an incident: the job dashboard's panels drawn as PNGs, and one HTML page.

:func:`render_report` takes an alert (or a job and a time range), runs each timeseries
panel of the job dashboard (``uid == "trainguard-job"``) against the store with the
panel's own SQL, draws it with the blamed rank or node highlighted among its peers, and
writes one self-contained page that embeds the images by relative path, so the directory
can be attached to a ticket or copied into a postmortem as it is.

The panels come from :mod:`trainguard.grafana.dashboards` and their SQL is expanded by
:func:`trainguard.grafana.macros.expand`, so a report shows what Grafana shows. Times are
Unix epoch seconds (UTC) throughout.

The parts, in the order a report goes through them: :mod:`.incident` (the alert or job,
its time range and whom it blames, from the store), :mod:`.query` (each panel's SQL run
for the incident), :mod:`.draw` (one panel as a PNG), :mod:`.page` (the HTML) and
:mod:`.render` (:func:`render_report`, which runs them in turn).
"""

from trainguard.report.draw import MAX_SERIES, PanelImage, draw_panel
from trainguard.report.incident import Incident
from trainguard.report.query import JOB_DASHBOARD_UID, Series
from trainguard.report.render import ReportResult, render_report

__all__ = [
    "JOB_DASHBOARD_UID", "MAX_SERIES", "Incident", "PanelImage", "ReportResult", "Series",
    "draw_panel", "render_report",
]
