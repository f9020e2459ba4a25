"""Who really sent a message: MAC verification at ingest, and ``forged_telemetry`` findings.

:class:`MessageAuth` is what the :class:`~trainguard.pipeline.ingest.Ingestor` asks about
every input message (see :mod:`trainguard.schemas.auth` for the keys and the MAC). With
``required`` (the default once a fleet secret is configured) a message is refused, as a
dead letter with reason ``unauthenticated``, when

- its MAC is missing or wrong, or its key id is not one of the fleet's: its real source
  is unknown (``unauthenticated``);
- its MAC is good but its records name another node (a batch's ``node``, a step record's
  ``node``): its real source is the node whose key signed it.

Each refusal is reported to :class:`ForgeryTracker`, which raises one ``forged_telemetry``
integrity finding per (claimed node, real source) pair and then at most one repeat every
``repeat_s`` with the running count: a flood of forgeries is one page, not thousands.
Without ``required`` nothing is refused; failures are only counted (a rollout mode).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from trainguard.pipeline.consistency.config import CHECK_VERSION
from trainguard.pipeline.dead_letters import RawMessage
from trainguard.schemas.auth import FleetSecret, Verdict, Verifier, header_map
from trainguard.schemas.records import NAME_PATTERN, Finding, Record, StepBatch

__all__ = ["UNAUTHENTICATED", "ForgeryTracker", "MessageAuth", "foreign_node"]

#: The real source of a message without a valid MAC.
UNAUTHENTICATED = "unauthenticated"
#: Claims beyond a source's ``max_claims`` are aggregated under this name.
_MANY = "*"
_NAME = re.compile(NAME_PATTERN)


def foreign_node(record: Record, node: str) -> str | None:
    """The first node other than ``node`` that ``record`` speaks for, if any."""
    named = getattr(record, "node", None)
    if isinstance(named, str) and named != node:
        return named
    if isinstance(record, StepBatch):
        for step in record.steps:
            if step.node != node:
                return step.node
    return None


def _shown(name: str | None) -> str:
    """A claimed name as a finding may carry it (header text is anybody's)."""
    if name is None:
        return "unknown"
    return name if _NAME.match(name) else "invalid-name"


@dataclass
class _Pair:
    finding_id: str
    cluster: str
    first_seen: float
    last_seen: float
    last_emit: float
    count: int
    why: str
    topic: str


class ForgeryTracker:
    """One ``forged_telemetry`` finding per (claimed, real) pair, repeated every ``repeat_s``.

    A source claiming more than ``max_claims`` different nodes has the rest aggregated
    under the claim ``*``; at most ``max_pairs`` pairs are remembered (the oldest goes).
    ``now`` (the worker's clock) times the repeats; the findings carry the messages' times.
    """

    def __init__(self, *, repeat_s: float = 300.0, max_claims: int = 16,
                 max_pairs: int = 4096) -> None:
        self.repeat_s, self.max_claims, self.max_pairs = repeat_s, max_claims, max_pairs
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._claims: dict[str, int] = {}
        #: Forged messages seen, and those folded into an open finding instead of a new one.
        self.messages = 0
        self.folded = 0

    def observe(self, claimed: str | None, real: str | None, *, cluster: str | None, why: str,
                topic: str, ts: float, now: float) -> Finding | None:
        """Count one refused message; return the finding to publish, if one is due."""
        self.messages += 1
        source = real if real is not None else UNAUTHENTICATED
        key = (_shown(claimed), source)
        pair = self._pairs.get(key)
        if pair is None and self._claims.get(source, 0) >= self.max_claims:
            key = (_MANY, source)
            pair = self._pairs.get(key)
        if pair is None:
            return self._open(key, _shown(cluster), why, topic, ts, now)
        pair.count += 1
        pair.last_seen, pair.why, pair.topic = max(pair.last_seen, ts), why, topic
        if now - pair.last_emit < self.repeat_s:
            self.folded += 1
            return None
        pair.last_emit = now
        return self._finding(key, pair)

    def _open(self, key: tuple[str, str], cluster: str, why: str, topic: str, ts: float,
              now: float) -> Finding:
        claimed, source = key
        text = f"{cluster}|forged_telemetry|{claimed}|{source}|t={ts:.3f}"
        fid = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]
        pair = _Pair(fid, cluster, ts, ts, now, 1, why, topic)
        self._pairs[key] = pair
        self._claims[source] = self._claims.get(source, 0) + 1
        while len(self._pairs) > self.max_pairs:
            oldest = next(iter(self._pairs))
            del self._pairs[oldest]
            self._claims[oldest[1]] -= 1
        return self._finding(key, pair)

    def _finding(self, key: tuple[str, str], pair: _Pair) -> Finding:
        claimed, source = key
        who = ("messages with no valid MAC" if source == UNAUTHENTICATED
               else f"messages signed by node {source}")
        whom = "several nodes" if claimed == _MANY else f"node {claimed}"
        nodes = {n for n in (claimed, source) if n not in (_MANY, UNAUTHENTICATED, "unknown")}
        return Finding(
            finding_id=pair.finding_id, cluster=pair.cluster, check="forged_telemetry",
            category="integrity", first_seen=pair.first_seen, ts=pair.last_seen,
            last_seen=pair.last_seen, nodes=sorted(nodes), observed=source, expected=claimed,
            score=float(pair.count),
            summary=f"{who} claim {whom}: {pair.count} refused (last: {pair.why} on "
                    f"{pair.topic})",
            evidence={"claimed_node": claimed, "real_node": source, "messages": pair.count,
                      "reason": pair.why, "topic": pair.topic},
            check_version=CHECK_VERSION)


class MessageAuth:
    """Verifies input messages against the fleet secrets; see the module docstring."""

    def __init__(self, secrets: Sequence[FleetSecret], *, required: bool = True,
                 tracker: ForgeryTracker | None = None) -> None:
        self.verifier = Verifier(secrets)
        self.required = required
        self.tracker = tracker or ForgeryTracker()
        #: Messages whose MAC verified; refusals (or, not required, passes) by why.
        self.verified = 0
        self.failed: dict[str, int] = {}

    def verify(self, msg: RawMessage) -> Verdict:
        """Who signed ``msg`` (``Verdict.node`` is ``None`` when nobody verifiable did)."""
        verdict = self.verifier.verify(msg.topic, msg.key, msg.value, header_map(msg.headers))
        if verdict.node is not None:
            self.verified += 1
        else:
            self._count(verdict.why or "no_mac")
        return verdict

    def wrong_node(self) -> None:
        """Count a message with a good MAC whose records name another node."""
        self._count("wrong_node")

    def _count(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1

    def health(self) -> dict[str, float]:
        """Counters for ``pipeline_health``."""
        out = {"auth_verified": float(self.verified),
               "forged_messages": float(self.tracker.messages),
               "forged_folded": float(self.tracker.folded)}
        for kid, n in self.verifier.by_kid.items():
            out[f"auth_verified_kid_{kid}"] = float(n)
        for why, n in self.failed.items():
            out[f"auth_failed_{why}"] = float(n)
        return out
