"""From baseline anomalies to what an alert needs: always a ticket, never a page.

A baseline anomaly says one GPU or rank departed from its own past (and, where the
baselines stage knew its job, not together with its peers). That is worth a look by the
hardware or training team, not a 3 a.m. page: the lifecycle may lower its severity
(silences) but never raises it, so an anomaly alert is a ``ticket`` at most. One alert
per (cluster, entity, metric): a later anomaly of the same metric while the ticket is
open refreshes it instead of opening another.
"""

from __future__ import annotations

from collections.abc import Collection

from trainguard.pipeline.alerts.observations import Evidence, Observation, _digest
from trainguard.schemas.records import Anomaly

__all__ = ["ANOMALY_CATEGORY", "ANOMALY_CHECK", "alertable", "anomaly_fingerprint",
           "from_anomaly", "is_anomaly_alert"]

#: The ``check`` of every alert raised from a baseline anomaly (runbook
#: ``docs/runbooks/baseline_anomaly.md``); not a consistency check of the registry.
ANOMALY_CHECK = "baseline_anomaly"
#: Its ``category`` label, which keeps it apart from the consistency findings' categories.
ANOMALY_CATEGORY = "baseline"


def anomaly_fingerprint(anomaly: Anomaly) -> str:
    """The stable alert identity of an anomaly: cluster, entity and metric."""
    return _digest("anomaly", anomaly.cluster, anomaly.entity_kind, anomaly.entity,
                   anomaly.metric)


def alertable(anomaly: Anomaly, patterns: Collection[str]) -> bool:
    """True if an anomaly of this pattern becomes an alert (``anomaly_patterns``)."""
    return anomaly.pattern in patterns


def is_anomaly_alert(check: str) -> bool:
    """True for an alert raised from a baseline anomaly (it lives with the anomalies)."""
    return check == ANOMALY_CHECK


def from_anomaly(anomaly: Anomaly) -> Observation:
    """What an alert needs from a baseline anomaly: a ticket naming the entity and metric."""
    a = anomaly
    labels = {"check": ANOMALY_CHECK, "category": ANOMALY_CATEGORY, "cluster": a.cluster,
              "metric": a.metric, "pattern": a.pattern, "entity_kind": a.entity_kind}
    if a.job_id is not None:
        labels["job_id"] = a.job_id
    if a.node is not None:
        labels["node"] = a.node
    what = f"GPU {a.entity}" if a.entity_kind == "gpu" else f"rank {a.entity}"
    summary = (f"{what}: {a.metric} {a.pattern.replace('_', ' ')} to {a.value:.4g} from its "
               f"baseline {a.baseline:.4g} ({a.score:+.1f} scales)")
    evidence: Evidence = {
        "entity": a.entity, "entity_kind": a.entity_kind, "metric": a.metric,
        "pattern": a.pattern, "value": a.value, "baseline": a.baseline, "scale": a.scale,
        "score": a.score, "window": float(a.window), "detector": a.detector,
        "detector_version": a.detector_version, "summary": summary,
    }
    return Observation(
        fingerprint=anomaly_fingerprint(a), cluster=a.cluster, check=ANOMALY_CHECK,
        severity="ticket", job_id=a.job_id, node=a.node,
        nodes=(a.node,) if a.node is not None else (), rank=a.rank, gpu_index=a.gpu_index,
        summary=summary, evidence=evidence, labels=labels, first_seen=a.first_seen,
        seen=a.ts,
    )
