"""Per-node clock skew, measured from (record ts − Kafka timestamp), and ``clock_skew``.

Agents stamp every sample batch with their node's clock; Kafka stamps the message with
the producer's (or, with ``LogAppendTime`` topics, the broker's) clock. The difference is
the node's clock offset plus the transport delay. Per node, the median of the last
``skew_window`` differences is its offset; the node's *skew* is that offset minus the
job's reference: the median of its nodes' offsets (of two middle values, the one nearer
the Kafka clock, so that in a two-node job the node off the Kafka clock is the skewed
one). Taking the job's reference, not zero, keeps replays and accelerated simulations
(whose event time runs away from Kafka's on every node alike) free of findings.

* ``clock_skew`` (hardware): a node whose skew stayed beyond ``clock_skew_s`` for
  ``skew_k`` sample batches in a row. Its NTP is broken, or somebody set its clock.
* The same-tick device checks (a released GPU judged against its peers' samples of the
  same tick, the peers' median) use :meth:`ClockWatch.aligned`: the sample time minus the
  node's skew once it is beyond ``clock_skew_s``. Below that bound the checks' own slack
  (a tick of waiting) absorbs it; above it they would compare different ticks.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault

__all__ = ["ClockWatch"]

#: Jobs with at most this many nodes recompute the reference on every sample batch.
_EXACT_NODES = 64


@dataclass(slots=True)
class _NodeClock:
    diffs: deque[float]
    offset: float = math.nan
    skew: float = 0.0
    #: Sample batches in a row with the skew beyond the bound.
    over: int = 0
    first_over: float = math.nan


class ClockWatch:
    """The clock offsets of one job's nodes, and which of them are skewed."""

    def __init__(self, config: ConsistencyConfig) -> None:
        self.config = config
        self.nodes: dict[str, _NodeClock] = {}
        self._reference = math.nan
        self._since_reference = 0
        #: Nodes whose skew is beyond the bound (their times get realigned).
        self._skewed: set[str] = set()

    def observe(self, node: str, ts: float, broker_ts: float | None) -> None:
        """One sample batch of ``node`` stamped ``ts`` that Kafka stamped ``broker_ts``."""
        if broker_ts is None or not math.isfinite(ts - broker_ts):
            return
        c = self.config
        st = self.nodes.get(node)
        if st is None:
            st = self.nodes[node] = _NodeClock(deque(maxlen=c.skew_window))
        st.diffs.append(ts - broker_ts)
        if len(st.diffs) >= c.skew_min_samples:
            st.offset = statistics.median(st.diffs)
        # In a big job, refresh the reference about once per round of its nodes (it moves
        # slowly); a small one's every time, so a replay's drift cancels exactly.
        self._since_reference += 1
        if (len(self.nodes) <= _EXACT_NODES or self._since_reference >= len(self.nodes)
                or math.isnan(self._reference)):
            self._since_reference = 0
            self._reference = _reference([n.offset for n in self.nodes.values()])
        if not math.isnan(st.offset) and not math.isnan(self._reference):
            st.skew = st.offset - self._reference
            if abs(st.skew) > c.clock_skew_s:
                self._skewed.add(node)
            else:
                self._skewed.discard(node)

    @property
    def skewed(self) -> bool:
        """Some node of the job is skewed beyond the bound (its times get realigned)."""
        return bool(self._skewed)

    def skew(self, node: str) -> float:
        """The node's clock minus its job's, in seconds (0 until measured)."""
        st = self.nodes.get(node)
        return 0.0 if st is None else st.skew

    def aligned(self, node: str, ts: float) -> float:
        """``ts`` on the job's clock: corrected by the node's skew once beyond the bound."""
        if node not in self._skewed:
            return ts
        return ts - self.nodes[node].skew

    def judge(
        self, node: str, ts: float, ranks_on: Callable[[str, int | None], tuple[int, ...]]
    ) -> list[Fault]:
        """``clock_skew`` for ``node`` after its sample batch at ``ts`` (empty when fine)."""
        st = self.nodes.get(node)
        c = self.config
        if st is None or abs(st.skew) <= c.clock_skew_s:
            if st is not None:
                st.over = 0
            return []
        if st.over == 0:
            st.first_over = ts
        st.over += 1
        if st.over < c.skew_k:
            return []
        way = "ahead of" if st.skew > 0 else "behind"
        return [Fault(
            check="clock_skew", category="hardware", entities=(node,),
            summary=(f"{node}: its clock runs {abs(st.skew):.1f} s {way} its job's other "
                     f"nodes (median of its last {len(st.diffs)} samples against Kafka's "
                     f"timestamps); more than the {c.clock_skew_s:g} s the same-tick checks "
                     "tolerate, so its samples are realigned and its NTP needs a look"),
            first_seen=st.first_over, ts=ts, ranks=ranks_on(node, None), nodes=(node,),
            observed=round(st.skew, 3), expected=0.0, score=abs(st.skew) / c.clock_skew_s,
            evidence={"skew_s": round(st.skew, 3), "offset_s": round(st.offset, 3),
                      "job_offset_s": round(self._reference, 3), "samples": len(st.diffs),
                      "clock_skew_s": c.clock_skew_s},
        )]


def _reference(offsets: list[float]) -> float:
    """Median of the measured offsets; of two middle values, the one nearer zero."""
    known = sorted(o for o in offsets if not math.isnan(o))
    if not known:
        return math.nan
    mid = len(known) // 2
    if len(known) % 2:
        return known[mid]
    return min(known[mid - 1], known[mid], key=abs)
