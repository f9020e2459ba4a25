"""trainguard's four Grafana dashboards as data: fleet, job, alerts and pipeline health.

One module per dashboard; ``_sql`` holds what their queries share.

Every panel is one ClickHouse query for the ``grafana-clickhouse-datasource`` plugin (see
:mod:`trainguard.grafana.model`). Conventions the queries keep, and why:

- Time series return ``time`` first, bucketed with ``$__timeInterval``; panels of rare
  events (alerts, findings, dead letters) bucket onto a grid of every interval in the
  range (``@grid``), so they draw zeros rather than nothing, and an empty query means a
  broken one.
- Every variable is used inside ``$__conditionalAll(..., $var)``, so "All" costs no filter
  and no list of every value (``trainguard report`` relies on it too).
- Gauges (utilization, power, loss) are averaged without ``FINAL``: a replayed row shifts
  an average by little. Counts and latest-state reads (events, findings, alerts) use
  ``FINAL`` or ``LIMIT 1 BY``, since a replay would count twice.
- A macro without arguments has a ``)`` after it before any ``(`` (``($__fromTime)``,
  ``toUInt32($__toTime)``): some plugin versions let it swallow the next ``(...)``.
- A series column never reuses the name of the column it is computed from
  (``toString(s.rank) AS rank``): older ClickHouse analyzers call that a cyclic alias.
"""

from __future__ import annotations

from trainguard.grafana.dashboards.alerts import ALERTS
from trainguard.grafana.dashboards.fleet import FLEET
from trainguard.grafana.dashboards.job import JOB
from trainguard.grafana.dashboards.pipeline import PIPELINE
from trainguard.grafana.model import Dashboard

__all__ = ["UIDS", "all_dashboards"]

#: The dashboards' stable uids (links and alert URLs point at them), in order.
UIDS = ("trainguard-fleet", "trainguard-job", "trainguard-alerts", "trainguard-pipeline")


def all_dashboards() -> tuple[Dashboard, ...]:
    """The four dashboards, in :data:`UIDS` order."""
    return (FLEET, JOB, ALERTS, PIPELINE)
