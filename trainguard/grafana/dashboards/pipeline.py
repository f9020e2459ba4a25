"""The pipeline health dashboard: the workers' own metrics (``pipeline_health``) and the agents'."""

from __future__ import annotations

from trainguard.grafana.dashboards._sql import HB_WHERE, increase, sql, window
from trainguard.grafana.model import Dashboard, Panel, Variable

__all__ = ["PIPELINE"]

_HEALTH = "{database}.pipeline_health"
_WORKER_WHERE = "$__timeFilter(ts) AND @worker"

PIPELINE = Dashboard(
    uid="trainguard-pipeline", title="trainguard / Pipeline health",
    description="Is the pipeline keeping up: ingest rate, consumer lag, dead letters, sink "
                "latency, alert queue, and the agents' own spools and drops.",
    variables=(
        Variable("worker", "Worker", multi=True, sql=sql(f"""
            SELECT DISTINCT worker FROM {_HEALTH}
            WHERE $__timeFilter(ts) ORDER BY worker""")),
        Variable("cluster", "Cluster", multi=True, sql=sql("""
            SELECT DISTINCT cluster FROM {database}.agent_heartbeats
            WHERE $__timeFilter(ts) ORDER BY cluster""")),
        Variable("node", "Node", multi=True, sql=sql("""
            SELECT DISTINCT node FROM {database}.agent_heartbeats
            WHERE $__timeFilter(ts) AND @cluster ORDER BY node""")),
    ),
    links=("trainguard-fleet", "trainguard-job", "trainguard-alerts"),
    panels=(
        Panel("Ingest rate", "timeseries", unit="short",
              description="Messages consumed and records written per second, all workers.",
              columns=("time", "ingest_msgs_per_s", "records_per_s"), sql=sql(f"""
            SELECT time, sum(msgs) AS ingest_msgs_per_s, sum(records) AS records_per_s FROM (
                SELECT $__timeInterval(ts) AS time, worker,
                    avgIfOrNull(value, metric = 'ingest_msgs_per_s') AS msgs,
                    avgIfOrNull(value, metric = 'records_per_s') AS records
                FROM {_HEALTH}
                WHERE {_WORKER_WHERE} AND metric IN ('ingest_msgs_per_s', 'records_per_s')
                GROUP BY time, worker)
            GROUP BY time ORDER BY time""")),
        Panel("Consumer lag by topic", "timeseries", unit="short", series="topic",
              description="Messages on the broker not yet read, summed over partitions.",
              columns=("time", "topic", "consumer_lag"), sql=sql(f"""
            SELECT time, topic, sum(partition_lag) AS consumer_lag FROM (
                SELECT $__timeInterval(ts) AS time, topic, partition, max(value) AS partition_lag
                FROM {_HEALTH} WHERE {_WORKER_WHERE} AND metric = 'consumer_lag'
                GROUP BY time, topic, partition)
            GROUP BY time, topic ORDER BY time, topic""")),
        Panel("Dead letters per interval", "timeseries", unit="short",
              description="Input the workers rejected (dead_letters table).",
              columns=("time", "dead_letters"), sql=sql("""
            SELECT time, ifNull(d.n, 0) AS dead_letters FROM (@grid) AS g
            LEFT JOIN (
                SELECT $__timeInterval(ts) AS time, count() AS n
                FROM {database}.dead_letters FINAL WHERE $__timeFilter(ts) GROUP BY time) AS d
            USING (time) ORDER BY time""")),
        Panel("Dead letters since worker start", "timeseries", unit="short",
              description="The workers' own dead-letter counters, summed.",
              columns=("time", "dead_letters_total"), sql=sql(f"""
            SELECT time, sum(worker_total) AS dead_letters_total FROM (
                SELECT $__timeInterval(ts) AS time, worker, max(value) AS worker_total
                FROM {_HEALTH} WHERE {_WORKER_WHERE} AND metric = 'dead_letters_total'
                GROUP BY time, worker)
            GROUP BY time ORDER BY time""")),
        Panel("Sink batch latency", "timeseries", unit="ms",
              columns=("time", "avg_ms", "max_ms"), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time, avg(value) AS avg_ms, max(value) AS max_ms
            FROM {_HEALTH} WHERE {_WORKER_WHERE} AND metric = 'sink_batch_ms'
            GROUP BY time ORDER BY time""")),
        Panel("Alert delivery queue", "timeseries", unit="short",
              description="Alert state changes waiting for delivery, and deliveries given up.",
              columns=("time", "alerts_queued", "deliveries_failed_total"), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time,
                maxIf(value, metric = 'alerts_queued') AS alerts_queued,
                maxIf(value, metric = 'deliveries_failed_total') AS deliveries_failed_total
            FROM {_HEALTH}
            WHERE {_WORKER_WHERE} AND metric IN ('alerts_queued', 'deliveries_failed_total')
            GROUP BY time ORDER BY time""")),
        Panel("Agent spool depth", "timeseries", unit="short", series="node",
              description="Batches each agent holds because it could not send them.",
              columns=("time", "node", "spooled"), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time, node, max(spool_depth) AS spooled
            FROM {{database}}.agent_heartbeats WHERE {HB_WHERE}
            GROUP BY time, node ORDER BY time, node""")),
        Panel("Agent drops and send errors", "timeseries", unit="short",
              description="Rise of the agents' drop and error counters, all agents.",
              columns=("time", "spool_dropped", "datagrams_dropped", "steps_dropped",
                       "send_errors"), sql=sql(f"""
            SELECT time, sum(d_spool) AS spool_dropped, sum(d_datagrams) AS datagrams_dropped,
                sum(d_steps) AS steps_dropped, sum(d_send) AS send_errors
            FROM (
                SELECT $__timeInterval(ts) AS time,
                    {increase('spool_dropped')} AS d_spool,
                    {increase('datagrams_dropped')} AS d_datagrams,
                    {increase('steps_dropped')} AS d_steps,
                    {increase('send_errors')} AS d_send
                FROM {{database}}.agent_heartbeats FINAL WHERE {HB_WHERE}
                {window('node')})
            GROUP BY time ORDER BY time""")),
    ),
)
