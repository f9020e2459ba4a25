"""The job dashboard: one training job rank by rank, its checks, fingerprints, checkpoints.

The alerts link here as ``/d/trainguard-job?var-job=...&var-node=...``, and
``trainguard report`` draws its timeseries panels with variables ``cluster``, ``job``,
``node`` and ``rank``: keep those names. ``job`` is one job, never All: the per-rank
charts would average rank N over every job. The alerts of the job are drawn over the
time series as regions from firing to resolve.
"""

from __future__ import annotations

from trainguard.grafana.dashboards._sql import FAR_FUTURE, LATEST_FIRST, open_counts, sql
from trainguard.grafana.model import Annotation, Dashboard, Panel, Variable
from trainguard.schemas.records import CHECK_NAMES

__all__ = ["JOB"]

_STEPS_WHERE = "$__timeFilter(ts) AND @cluster AND @job AND @node AND @rank"


def _per_rank(title: str, column: str, unit: str, description: str) -> Panel:
    return Panel(title, "timeseries", unit=unit, series="rank", description=description,
                 columns=("time", "rank", column), sql=sql(f"""
        SELECT $__timeInterval(ts) AS time, toString(s.rank) AS rank, avg(s.{column}) AS {column}
        FROM {{database}}.steps AS s WHERE {_STEPS_WHERE}
        GROUP BY time, rank ORDER BY time, rank"""))


#: Each alert of the job (its latest state) from firing to resolve, or to the range's end
#: while it fires; tags: severity, check, node.
_ALERTS = Annotation("Alerts", sql=sql(f"""
    SELECT starts_at AS time, ifNull(ends_at, toDateTime64(($__toTime), 3, 'UTC')) AS timeEnd,
        concat(severity, ': ', check) AS title,
        concat(summary, if(status = 'firing', ' (firing)', ' (resolved)')) AS text,
        concat(severity, ',', check, if(node = '', '', concat(',', node))) AS tags
    FROM (
        SELECT * FROM {{database}}.alerts WHERE ts <= ($__toTime) AND @cluster AND @job AND @node
        ORDER BY alert_id, {LATEST_FIRST} LIMIT 1 BY alert_id)
    WHERE starts_at <= ($__toTime) AND (ends_at IS NULL OR ends_at >= ($__fromTime))
    ORDER BY time"""))

JOB = Dashboard(
    uid="trainguard-job", title="trainguard / Job",
    description="One training job rank by rank: loss, gradient norm, learning rate, step "
                "time, stragglers, the consistency checks, fingerprints and checkpoints.",
    variables=(
        Variable("cluster", "Cluster", multi=True, sql=sql("""
            SELECT DISTINCT cluster FROM {database}.steps
            WHERE $__timeFilter(ts) ORDER BY cluster""")),
        Variable("job", "Job", include_all=False, sql=sql("""
            SELECT DISTINCT job_id FROM {database}.steps
            WHERE $__timeFilter(ts) AND @cluster ORDER BY job_id""")),
        Variable("node", "Node", multi=True, sql=sql("""
            SELECT DISTINCT node FROM {database}.steps
            WHERE $__timeFilter(ts) AND @cluster AND @job ORDER BY node""")),
        Variable("rank", "Rank", multi=True, sql=sql("""
            SELECT DISTINCT rank FROM {database}.steps
            WHERE $__timeFilter(ts) AND @cluster AND @job AND @node ORDER BY rank""")),
    ),
    links=("trainguard-fleet", "trainguard-alerts", "trainguard-pipeline"),
    annotations=(_ALERTS,),
    panels=(
        _per_rank("Loss per rank", "loss", "short", "Mean training loss per interval."),
        _per_rank("Gradient norm per rank", "grad_norm", "short",
                  "Mean global gradient norm per interval."),
        _per_rank("Learning rate per rank", "lr", "short",
                  "Ranks of one job should agree exactly."),
        _per_rank("Step time per rank", "step_time_s", "s", "Mean wall time of a step."),
        Panel("Straggler ratio per rank", "timeseries", unit="percentunit", series="rank",
              description="Each rank's step time over the median of all ranks at the same "
                          "step (100%: as fast as the median); the median ignores the node "
                          "and rank filters.",
              columns=("time", "rank", "ratio"), sql=sql("""
            SELECT time, rank, avg(step_ratio) AS ratio FROM (
                SELECT $__timeInterval(ts) AS time, toString(s.rank) AS rank, node,
                    step_time_s / nullIf(median(step_time_s) OVER (PARTITION BY job_id, step), 0)
                        AS step_ratio
                FROM {database}.steps AS s WHERE $__timeFilter(ts) AND @cluster AND @job)
            WHERE @node AND @rank
            GROUP BY time, rank ORDER BY time, rank""")),
        Panel("Tokens per second per rank", "timeseries", unit="short", series="rank",
              description="From the 1-minute rollups (which keep no node: the node filter "
                          "does not apply).",
              columns=("time", "rank", "tokens_per_s"), sql=sql("""
            SELECT $__timeInterval(minute) AS time, toString(s.rank) AS rank,
                avgMerge(tokens_per_s_avg) AS tokens_per_s
            FROM {database}.steps_1m AS s
            WHERE $__timeFilter(minute) AND @cluster AND @job AND @rank
            GROUP BY time, rank ORDER BY time, rank""")),
        Panel("Consistency checks", "state-timeline", width=24, height=10,
              description="Open findings of each cross-rank check per interval (0: passing). "
                          "A finding is open from first seen until cleared.",
              columns=("time", *CHECK_NAMES), sql=sql(f"""
            WITH (
                SELECT groupArray((check, toUInt32(first_seen),
                    toUInt32(ifNull(cleared_at, {FAR_FUTURE}))))
                FROM {{database}}.findings FINAL
                WHERE first_seen <= ($__toTime) AND @cluster AND @job AND @any_node AND @any_rank
            ) AS found
            SELECT time,
                @counts
            FROM (@grid) ORDER BY time""", counts=open_counts("found", CHECK_NAMES))),
        Panel("Parameters differing from their replicas", "timeseries", unit="short",
              series="rank",
              description="1 when a rank's parameter checksum differs from the one most of "
                          "its replicas (same tensor, pipeline and parameter shard and "
                          "expert rank) report at the same "
                          "step: replicas must hold identical weights.",
              columns=("time", "rank", "differs"), sql=sql(f"""
            SELECT time, rank, max(d) AS differs FROM (
                SELECT $__timeInterval(ts) AS time, toString(s.rank) AS rank,
                    toUInt8(param_checksum != arrayElement(topK(1)(param_checksum) OVER (
                        PARTITION BY job_id, step, tp_rank, pp_rank, shard, ep_rank), 1)) AS d
                FROM {{database}}.steps AS s
                WHERE {_STEPS_WHERE} AND param_checksum != ''
            ) GROUP BY time, rank ORDER BY time, rank""")),
        Panel("Code and seed fingerprints", "timeseries", unit="short",
              description="Distinct fingerprints among the ranks: above 1, ranks run "
                          "different code, configuration or seeds.",
              columns=("time", "code_fingerprints", "seed_fingerprints"), sql=sql(f"""
            SELECT $__timeInterval(ts) AS time, uniqExact(env_fingerprint) AS code_fingerprints,
                uniqExact(seed_fingerprint) AS seed_fingerprints
            FROM {{database}}.steps WHERE {_STEPS_WHERE}
            GROUP BY time ORDER BY time""")),
        Panel("Fingerprint changes", "table", format="table",
              description="Each code and seed fingerprint: how many ranks ran it, and when.",
              columns=("kind", "fingerprint", "ranks", "first_step", "last_step", "first_seen",
                       "last_seen"), sql=sql(f"""
            SELECT kind, fingerprint, uniqExact(rank) AS ranks, min(step) AS first_step,
                max(step) AS last_step, min(ts) AS first_seen, max(ts) AS last_seen
            FROM {{database}}.steps
            ARRAY JOIN ['code', 'seed'] AS kind, [env_fingerprint, seed_fingerprint] AS fingerprint
            WHERE {_STEPS_WHERE}
            GROUP BY kind, fingerprint ORDER BY kind, first_seen""")),
        Panel("Findings", "table", format="table", allow_empty=True, width=24,
              columns=("first_seen", "check", "category", "state", "summary", "step", "ranks",
                       "nodes", "last_seen", "cleared_at"), sql=sql("""
            SELECT first_seen, check, category, if(cleared_at IS NULL, 'open', 'cleared') AS state,
                summary, step, ranks, nodes, last_seen, cleared_at
            FROM {database}.findings FINAL
            WHERE first_seen <= ($__toTime) AND (cleared_at IS NULL OR cleared_at >= ($__fromTime))
                AND @cluster AND @job AND @any_node AND @any_rank
            ORDER BY first_seen DESC LIMIT 200""")),
        Panel("Checkpoints", "table", format="table", allow_empty=True, width=24,
              description="Per checkpoint: ranks that saved and loaded it, and ranks whose "
                          "loaded digest differs from the one they saved.",
              columns=("checkpoint_id", "step", "first_seen", "saved_ranks", "loaded_ranks",
                       "modified_ranks"), sql=sql("""
            SELECT checkpoint_id, min(rank_step) AS step, min(rank_first) AS first_seen,
                countIf(saved) AS saved_ranks, countIf(loaded) AS loaded_ranks,
                countIf(saved AND loaded AND save_digest != load_digest) AS modified_ranks
            FROM (
                SELECT checkpoint_id, rank, min(step) AS rank_step, min(ts) AS rank_first,
                    countIf(action = 'save') > 0 AS saved, countIf(action = 'load') > 0 AS loaded,
                    argMaxIf(digest, ts, action = 'save') AS save_digest,
                    argMaxIf(digest, ts, action = 'load') AS load_digest
                FROM {database}.checkpoints FINAL
                WHERE $__timeFilter(ts) AND @cluster AND @job AND @node AND @rank
                GROUP BY checkpoint_id, rank)
            GROUP BY checkpoint_id ORDER BY first_seen DESC""")),
    ),
)
