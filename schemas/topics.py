"""Kafka topic names: part of the wire contract, shared by agents and workers.

Every name takes a prefix (default ``tg``) so several deployments, or several tests,
can share one broker. Keys: step batches by job (so one job's ranks meet in one
partition downstream); sample batches by the node's job while it runs one (so the job's
GPU samples meet its steps), else by node; heartbeats by node.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "Topics"]

DEFAULT_PREFIX = "tg"


@dataclass(frozen=True)
class Topics:
    """The set of topic names for one deployment prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def samples(self) -> str:
        """GPU sample batches, one message per node per tick, keyed by job (or node)."""
        return f"{self.prefix}.gpu-samples.v1"

    @property
    def steps(self) -> str:
        """Training step batches, keyed by job id."""
        return f"{self.prefix}.steps.v1"

    @property
    def heartbeats(self) -> str:
        """Agent heartbeats, keyed by node."""
        return f"{self.prefix}.heartbeats.v1"

    @property
    def findings(self) -> str:
        """Findings of the cross-rank consistency checks, keyed by job."""
        return f"{self.prefix}.findings.v1"

    @property
    def anomalies(self) -> str:
        """Anomalies found by the baseline detectors, keyed by entity."""
        return f"{self.prefix}.anomalies.v1"

    @property
    def baseline_state(self) -> str:
        """Compacted: the latest detector state per input partition (key ``topic:partition``)."""
        return f"{self.prefix}.baseline-state.v1"

    @property
    def alerts(self) -> str:
        """Alert state changes, keyed by alert fingerprint."""
        return f"{self.prefix}.alerts.v1"

    @property
    def dead_letters(self) -> str:
        """Rejected input: original key and bytes, the reason in headers."""
        return f"{self.prefix}.dead-letters.v1"

    def inputs(self) -> tuple[str, ...]:
        """The topics node agents write and workers read."""
        return (self.samples, self.steps, self.heartbeats)

    def all(self) -> tuple[str, ...]:
        """Every topic of this deployment."""
        return (*self.inputs(), self.anomalies, self.findings, self.alerts, self.dead_letters)
