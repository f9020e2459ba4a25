"""The alerts dashboard: what fired when, what is open with its evidence, silences, deliveries."""

from __future__ import annotations

from trainguard.grafana.dashboards._sql import FAR_FUTURE, LATEST_FIRST, open_counts, sql
from trainguard.grafana.model import ColumnLink, Dashboard, Panel, Variable

__all__ = ["ALERTS"]

_ALERT_FILTERS = "@cluster AND @job AND @node"
_SEVERITIES = ("page", "ticket", "info")

ALERTS = Dashboard(
    uid="trainguard-alerts", title="trainguard / Alerts", time_from="now-6h", refresh="30s",
    description="What fired and when, what is open now with its evidence, what is "
                "silenced, and whether the receivers got it.",
    # Offered from the telemetry, not from the alerts: a quiet range has no alerts to list.
    variables=(
        Variable("cluster", "Cluster", multi=True, sql=sql("""
            SELECT DISTINCT cluster FROM {database}.sample_batches
            WHERE $__timeFilter(ts) ORDER BY cluster""")),
        Variable("job", "Job", multi=True, sql=sql("""
            SELECT DISTINCT job_id FROM {database}.steps
            WHERE $__timeFilter(ts) AND @cluster ORDER BY job_id""")),
        Variable("node", "Node", multi=True, sql=sql("""
            SELECT DISTINCT node FROM {database}.sample_batches
            WHERE $__timeFilter(ts) AND @cluster ORDER BY node""")),
    ),
    links=("trainguard-job", "trainguard-fleet", "trainguard-pipeline"),
    panels=(
        Panel("Alert timeline", "state-timeline", width=24,
              description="Alerts firing in each interval, by severity.",
              columns=("time", *_SEVERITIES), sql=sql(f"""
            WITH (
                SELECT groupArray((severity, toUInt32(starts_at),
                    toUInt32(ifNull(ends_at, {FAR_FUTURE}))))
                FROM (
                    SELECT severity, starts_at, ends_at FROM {{database}}.alerts
                    WHERE ts <= ($__toTime) AND {_ALERT_FILTERS}
                    ORDER BY alert_id, {LATEST_FIRST} LIMIT 1 BY alert_id)
            ) AS episodes
            SELECT time,
                @counts
            FROM (@grid) ORDER BY time""", counts=open_counts("episodes", _SEVERITIES))),
        Panel("Open alerts", "table", format="table", allow_empty=True, width=24, height=10,
              description="Alerts whose latest state at the end of the range is firing, "
                          "with their evidence; runbook and dashboard open from their links.",
              links=(ColumnLink("runbook_url", "Runbook"),
                     ColumnLink("dashboard_url", "Dashboard", new_tab=False)),
              columns=("starts_at", "severity", "check", "job_id", "node", "rank", "summary",
                       "evidence", "runbook_url", "dashboard_url"), sql=sql(f"""
            SELECT starts_at, severity, check, job_id, node, rank, summary, evidence,
                runbook_url, dashboard_url
            FROM (
                SELECT * FROM {{database}}.alerts WHERE ts <= ($__toTime) AND {_ALERT_FILTERS}
                ORDER BY fingerprint, {LATEST_FIRST} LIMIT 1 BY fingerprint)
            WHERE status = 'firing' ORDER BY severity = 'page' DESC, starts_at DESC""")),
        Panel("Alert state changes", "timeseries", unit="short",
              columns=("time", "fired", "resolved"), sql=sql(f"""
            SELECT time, ifNull(c.n_fired, 0) AS fired, ifNull(c.n_resolved, 0) AS resolved
            FROM (@grid) AS g
            LEFT JOIN (
                SELECT $__timeInterval(ts) AS time, countIf(status = 'firing') AS n_fired,
                    countIf(status = 'resolved') AS n_resolved
                FROM {{database}}.alerts FINAL WHERE $__timeFilter(ts) AND {_ALERT_FILTERS}
                GROUP BY time) AS c
            USING (time) ORDER BY time""")),
        Panel("Deliveries", "timeseries", unit="short",
              description="State changes delivered to a receiver, or given up after retries.",
              columns=("time", "delivered", "failed"), sql=sql("""
            SELECT time, ifNull(d.n_delivered, 0) AS delivered, ifNull(d.n_failed, 0) AS failed
            FROM (@grid) AS g
            LEFT JOIN (
                SELECT $__timeInterval(ts) AS time, countIf(outcome = 'delivered') AS n_delivered,
                    countIf(outcome = 'failed') AS n_failed
                FROM {database}.alert_deliveries WHERE $__timeFilter(ts) GROUP BY time) AS d
            USING (time) ORDER BY time""")),
        Panel("Silences", "table", format="table", allow_empty=True, width=24,
              description="Silences in force at some point of the range ('' = any; "
                          "integrity = 1: also mutes integrity findings; created_by and "
                          "updated_by: the OS users who added and last changed it).",
              columns=("silence_id", "state", "job_id", "node", "integrity", "starts_at",
                       "ends_at", "reason", "created_by", "updated_by"), sql=sql("""
            SELECT silence_id,
                multiIf(ends_at <= now64(3), 'expired', starts_at > now64(3), 'planned', 'active')
                    AS state,
                job_id, node, integrity, starts_at, ends_at, reason, created_by, updated_by
            FROM {database}.silences FINAL
            WHERE starts_at <= ($__toTime) AND ends_at >= ($__fromTime)
                AND $__conditionalAll(job_id IN ('', ${job:singlequote}), $job)
                AND $__conditionalAll(node IN ('', ${node:singlequote}), $node)
            ORDER BY starts_at DESC""")),
    ),
)
