"""The fleet dashboard: GPU health across every node, and the agents that report it."""

from __future__ import annotations

from trainguard.grafana.dashboards._sql import HB_WHERE, increase, sql, window
from trainguard.grafana.model import Dashboard, Panel, Variable

__all__ = ["FLEET"]

#: NVML clock event reasons that mean a slowdown: HW slowdown, SW and HW thermal.
_SLOWDOWN = {"hw_slowdown": 0x8, "sw_thermal": 0x20, "hw_thermal": 0x40}

_GPU_WHERE = "$__timeFilter(ts) AND @cluster AND @node"
_ROLLUP_WHERE = "$__timeFilter(minute) AND @cluster AND @node"
_CLUSTER_VAR = Variable("cluster", "Cluster", multi=True, sql=sql("""
    SELECT DISTINCT cluster FROM {database}.sample_batches
    WHERE $__timeFilter(ts) ORDER BY cluster"""))
_NODE_VAR = Variable("node", "Node", multi=True, sql=sql("""
    SELECT DISTINCT node FROM {database}.sample_batches
    WHERE $__timeFilter(ts) AND @cluster ORDER BY node"""))

FLEET = Dashboard(
    uid="trainguard-fleet", title="trainguard / Fleet",
    description="GPU health across the fleet: utilization, power, temperature, throttling, "
                "XID/ECC errors, lost GPUs, and agents that went silent or spool.",
    variables=(_CLUSTER_VAR, _NODE_VAR),
    links=("trainguard-job", "trainguard-alerts", "trainguard-pipeline"),
    panels=(
        Panel("GPU utilization by node", "heatmap", unit="percent", width=24, series="node",
              description="Mean GPU utilization of each node's GPUs per interval.",
              columns=("time", "node", "util"), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time, node, avg(util_gpu_pct) AS util
            FROM {{database}}.gpu_samples WHERE {_GPU_WHERE}
            GROUP BY time, node ORDER BY time, node""")),
        Panel("GPU utilization per GPU", "timeseries", unit="percent", series="device",
              description="Each GPU (node:index) on its own line.",
              columns=("time", "device", "util"), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time, concat(node, ':', toString(g.gpu)) AS device,
                avg(util_gpu_pct) AS util
            FROM {{database}}.gpu_samples AS g WHERE {_GPU_WHERE}
            GROUP BY time, device ORDER BY time, device""")),
        Panel("Power draw per node", "timeseries", unit="watt", series="node",
              description="Sum of the node's GPUs' mean power, from the 1-minute rollups.",
              columns=("time", "node", "power_w"), sql=sql(f"""
            SELECT time, node, sum(gpu_power_w) AS power_w FROM (
                SELECT $__timeInterval(minute) AS time, node, gpu,
                    avgMerge(power_w_avg) AS gpu_power_w
                FROM {{database}}.gpu_samples_1m WHERE {_ROLLUP_WHERE}
                GROUP BY time, node, gpu)
            GROUP BY time, node ORDER BY time, node""")),
        Panel("Hottest GPU per node", "timeseries", unit="celsius", series="node",
              description="Highest GPU temperature of each node, from the 1-minute rollups.",
              columns=("time", "node", "temp_c"), sql=sql(f"""
            SELECT $__timeInterval(minute) AS time, node, max(temp_c_max) AS temp_c
            FROM {{database}}.gpu_samples_1m WHERE {_ROLLUP_WHERE}
            GROUP BY time, node ORDER BY time, node""")),
        Panel("Throttled GPUs", "timeseries", unit="short",
              description="GPUs whose clock event reasons report a slowdown (0x8 HW "
                          "slowdown, 0x20 SW thermal, 0x40 HW thermal), per reason.",
              columns=("time", *_SLOWDOWN), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time,
                @counts
            FROM {{database}}.gpu_samples WHERE {_GPU_WHERE}
            GROUP BY time ORDER BY time""", counts=",\n    ".join(
                f"uniqExactIf((node, gpu), bitAnd(ifNull(clock_event_reasons, 0), {bit}) != 0) "
                f"AS {name}" for name, bit in _SLOWDOWN.items()))),
        Panel("XID and ECC events", "timeseries", unit="short",
              description="XID events reported, and the rise of the ECC error counters.",
              columns=("time", "xid_events", "ecc_corrected", "ecc_uncorrected"), sql=sql(f"""
            SELECT time, sum(length(xids)) AS xid_events, sum(d_corrected) AS ecc_corrected,
                sum(d_uncorrected) AS ecc_uncorrected
            FROM (
                SELECT $__timeInterval(ts) AS time, xids,
                    {increase('ecc_corrected')} AS d_corrected,
                    {increase('ecc_uncorrected')} AS d_uncorrected
                FROM {{database}}.gpu_samples FINAL WHERE {_GPU_WHERE}
                {window('node', 'gpu')})
            GROUP BY time ORDER BY time""")),
        Panel("Lost GPUs", "timeseries", unit="short",
              description="GPUs the agents could no longer read, summed over nodes.",
              columns=("time", "lost_gpus"), sql=sql("""
            SELECT time, sum(node_lost) AS lost_gpus FROM (
                SELECT $__timeInterval(ts) AS time, node, max(lost_gpus) AS node_lost
                FROM {database}.sample_batches WHERE $__timeFilter(ts) AND @cluster AND @node
                GROUP BY time, node)
            GROUP BY time ORDER BY time""")),
        Panel("Agents silent or spooling", "timeseries", unit="short",
              description="Agents seen in the range without a heartbeat in an interval (at "
                          "least 30 s; the newest interval may still be filling), and agents "
                          "holding a spool.",
              columns=("time", "silent", "spooling"), sql=sql(f"""
            SELECT time,
                (SELECT uniqExact(node) FROM {{database}}.agent_heartbeats WHERE {HB_WHERE})
                    - ifNull(h.reporting, 0) AS silent,
                ifNull(h.spooling_agents, 0) AS spooling
            FROM (@grid30) AS g
            LEFT JOIN (
                SELECT @bucket30 AS time, uniqExact(node) AS reporting,
                    uniqExactIf(node, spool_depth > 0) AS spooling_agents
                FROM {{database}}.agent_heartbeats WHERE {HB_WHERE} GROUP BY time) AS h
            USING (time) ORDER BY time""")),
        Panel("GPU events: XID and row remapping", "table", format="table", allow_empty=True,
              description="Samples that report XID errors or pending or failed row "
                          "remapping, newest first.",
              columns=("ts", "node", "gpu", "xids", "ecc_uncorrected", "remapped_rows",
                       "remap_pending", "remap_failed"), sql=sql(f"""
            SELECT ts, node, gpu, xids, ecc_uncorrected,
                remapped_rows_uncorrectable AS remapped_rows, remap_pending, remap_failed
            FROM {{database}}.gpu_samples FINAL
            WHERE {_GPU_WHERE} AND (notEmpty(xids) OR ifNull(remap_pending, false)
                OR ifNull(remap_failed, false))
            ORDER BY ts DESC LIMIT 200""")),
        Panel("Agents", "table", format="table",
              description="Last heartbeat of each agent: silent over 30 s, or spooling.",
              columns=("node", "state", "last_heartbeat", "silent_s", "spool", "spool_dropped",
                       "agent_version"), sql=sql(f"""
            SELECT node,
                multiIf(silent_s > 30, 'silent', spool > 0, 'spooling', 'ok') AS state,
                max(ts) AS last_heartbeat,
                dateDiff('second', last_heartbeat, least(now64(3), $__toTime_ms)) AS silent_s,
                argMax(spool_depth, ts) AS spool, max(h.spool_dropped) AS spool_dropped,
                argMax(h.agent_version, ts) AS agent_version
            FROM {{database}}.agent_heartbeats AS h WHERE {HB_WHERE}
            GROUP BY node ORDER BY state = 'ok', silent_s DESC, node""")),
        Panel("Anomalies", "table", format="table", allow_empty=True, width=24,
              description="Departures from each GPU's and rank's own baseline.",
              columns=("first_seen", "entity_kind", "entity", "metric", "pattern", "observed",
                       "expected", "score", "detector"), sql=sql("""
            SELECT first_seen, entity_kind, entity, metric, pattern, round(value, 3) AS observed,
                round(baseline, 3) AS expected, round(a.score, 2) AS score, detector
            FROM {database}.anomalies AS a FINAL
            WHERE $__timeFilter(first_seen) AND @cluster AND @node
            ORDER BY first_seen DESC LIMIT 200""")),
    ),
)
