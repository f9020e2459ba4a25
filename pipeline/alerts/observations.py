"""From findings to what an alert needs: identity, severity, labels, evidence.

The *fingerprint* is the stable identity of an alert (cluster, job or node, check,
blamed entity): receivers such as Alertmanager and PagerDuty dedup on it. Severity
is decided here from the finding's category and scope; the lifecycle may lower it
(silences, rate limit) but never raises it, and never lowers an integrity page for
another alert's sake (:attr:`Observation.pages_alone`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from trainguard.schemas.records import Finding

__all__ = ["Evidence", "Observation", "Severity", "finding_fingerprint", "from_finding"]

Severity = Literal["page", "ticket", "info"]
#: Hardware findings that mean the job lost a worker, not just speed.
_STOPS_THE_JOB = frozenset({"node_idle"})
Evidence = dict[str, float | str | None]

#: An integrity finding blaming more than this share of a job's ranks is job-wide: still a
#: page, but on-call should look at the job (shared input, config, storage), not a node.
JOB_WIDE_FRACTION = 0.25
#: ...and, when the finding does not say the world size, more than this many ranks.
JOB_WIDE_RANKS = 8


def _digest(*parts: str) -> str:
    text = "|".join(parts)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


def finding_fingerprint(finding: Finding) -> str:
    """The stable alert identity of a finding: cluster, job (or nodes), check, culprits.

    The first step is left out (unlike ``finding_id``), so the same fault found again in
    a later episode groups under the same alert.
    """
    nodes = ",".join(sorted(set(finding.nodes)))
    blamed = f"ranks={','.join(map(str, sorted(set(finding.ranks))))};nodes={nodes}"
    if finding.gpu_index is not None:
        blamed += f";gpu={finding.gpu_index}"
    what = finding.evidence.get("metric") or finding.evidence.get("quantity")
    if not finding.ranks and not finding.nodes and isinstance(what, str):
        # A finding on the job itself blames nobody: what it is about (loss or step time,
        # lr or seeds) is its identity, or a step-time ticket already firing would absorb
        # a later loss shift's page into its episode.
        blamed += f";what={what}"
    scope = finding.job_id if finding.job_id is not None else f"nodes={nodes}"
    return _digest("finding", finding.cluster, scope, finding.check, blamed)


@dataclass(frozen=True, slots=True)
class Observation:
    """A finding, reduced to what an alert needs."""

    fingerprint: str
    cluster: str
    check: str
    severity: Severity
    job_id: str | None
    node: str | None
    #: Every blamed node, for silences (a finding can blame several).
    nodes: tuple[str, ...]
    rank: int | None
    gpu_index: int | None
    summary: str
    evidence: Evidence
    labels: dict[str, str]
    first_seen: float
    #: Event time this observation shows the fault still present.
    seen: float
    #: Set when this is a finding's notice that it cleared (at this event time).
    cleared: bool = False

    @property
    def pages_alone(self) -> bool:
        """An integrity finding: it pages on its own, whatever else pages.

        Neither ``related_to`` nor the job's page rate limit may turn it into a ticket
        (nor does it count towards that limit): otherwise whoever can raise a lesser page
        on the culprit's node first, or five anywhere in the job, could mute the evidence.
        """
        return self.labels.get("category") == "integrity"


def _finding_severity(finding: Finding) -> Severity:
    if finding.category == "integrity":
        return "page"
    if finding.category == "availability":
        # A whole job stalling with no one to blame is usually the scheduler or the
        # trainer stopping on purpose: worth a ticket, not a 3 a.m. page.
        return "page" if finding.ranks or finding.nodes else "ticket"
    if finding.category == "hardware":
        # A GPU or node lost from a running job stops the job: page. A throttled or
        # slow GPU costs speed, not the run: a ticket for the hardware team.
        return "page" if finding.check in _STOPS_THE_JOB else "ticket"
    return "info"


def _is_job_wide(finding: Finding) -> bool:
    if finding.job_id is not None and not finding.ranks and not finding.nodes:
        return True  # names the job itself (code_changed, restart_divergence, job_shift)
    blamed = len(set(finding.ranks))
    world = finding.evidence.get("world_size")
    if isinstance(world, int | float) and world > 0:
        return blamed > JOB_WIDE_FRACTION * world
    return blamed > JOB_WIDE_RANKS


def from_finding(finding: Finding) -> Observation:
    """What an alert needs from a consistency finding (or from its cleared notice)."""
    seen = finding.last_seen if finding.last_seen is not None else finding.ts
    severity = _finding_severity(finding)
    labels = {"check": finding.check, "category": finding.category, "cluster": finding.cluster}
    node = finding.nodes[0] if len(set(finding.nodes)) == 1 else None
    if finding.job_id is not None:
        labels["job_id"] = finding.job_id
    if node is not None:
        labels["node"] = node
    if finding.category == "integrity" and _is_job_wide(finding):
        labels["scope"] = "job-wide"
    evidence: Evidence = dict(finding.evidence)
    evidence.update(
        observed=finding.observed, expected=finding.expected, score=finding.score,
        finding_id=finding.finding_id, summary=finding.summary,
        ranks=",".join(map(str, sorted(set(finding.ranks)))),
        nodes=",".join(sorted(set(finding.nodes))),
        step=float(finding.step) if finding.step is not None else None,
    )
    return Observation(
        fingerprint=finding_fingerprint(finding), cluster=finding.cluster, check=finding.check,
        severity=severity, job_id=finding.job_id, node=node,
        nodes=tuple(sorted(set(finding.nodes))),
        rank=finding.ranks[0] if len(set(finding.ranks)) == 1 else None,
        gpu_index=finding.gpu_index, summary=finding.summary, evidence=evidence, labels=labels,
        first_seen=finding.first_seen,
        seen=finding.cleared_at if finding.cleared_at is not None else seen,
        cleared=finding.cleared_at is not None,
    )
