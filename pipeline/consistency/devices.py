"""Cross-node checks on a job's GPU samples: idle nodes and GPUs, throttled GPUs.

Only sample batches that name their job are used (the agent knows it from its ranks'
step reports): a node is compared with the *other nodes of its job*, at about the same
event time, so a job-wide dip (checkpoint save, eval, restart) lowers the reference too
and nothing fires.

* ``node_idle``: a node whose mean utilization is below ``idle_pct`` while its peers'
  median is above ``busy_pct``, for ``idle_k`` samples in a row (or a single GPU so far
  below while its node is not). ``hardware`` when the node recently reported a lost GPU
  or an XID, else ``availability``.
* ``gpu_throttled``: a GPU whose clock-event reasons carry thermal or HW slowdown bits for
  ``throttle_k`` samples in a row.

The node state also answers :meth:`DeviceWatch.slowed`: did this node's GPUs report a
slowdown recently? That makes a straggler on it a hardware finding.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.consistency.config import HW_SLOWDOWN_BITS, ConsistencyConfig
from pipeline.consistency.findings import Entity, Fault
from schemas.records import GpuSampleBatch

__all__ = ["DeviceWatch", "reason_names"]

#: Jobs with more nodes than this use a peer median refreshed once per second of event
#: time (including the node itself, which then weighs nothing) instead of an exact one.
_EXACT_NODES = 32
_REASONS = {0x8: "HW slowdown", 0x20: "SW thermal", 0x40: "HW thermal"}


def reason_names(bits: int) -> str:
    """The thermal / slowdown reasons in ``bits``, in words."""
    return ", ".join(name for bit, name in _REASONS.items() if bits & bit)


@dataclass(slots=True)
class _Node:
    util: float = math.nan
    ts: float = -math.inf
    node_low: int = 0
    gpu_low: dict[int, int] = field(default_factory=dict)
    throttle: dict[int, int] = field(default_factory=dict)
    #: Last event time a GPU showed slowdown bits, and a lost GPU or an XID.
    slow_ts: float = -math.inf
    fault_ts: float = -math.inf


class DeviceWatch:
    """The GPU-sample state of one job, node by node."""

    def __init__(self, config: ConsistencyConfig) -> None:
        self.config = config
        self.nodes: dict[str, _Node] = {}
        self._median: tuple[float, float] = (-math.inf, math.nan)  # (computed at, value)

    def slowed(self, node: str, now: float) -> bool:
        """The node's GPUs reported thermal or HW slowdown within ``hw_recent_s`` of ``now``."""
        st = self.nodes.get(node)
        return st is not None and now - st.slow_ts <= self.config.hw_recent_s

    def observe(
        self, batch: GpuSampleBatch, ranks_on: Callable[[str, int | None], tuple[int, ...]]
    ) -> tuple[list[Fault], list[Fault], set[Entity] | None, set[Entity]]:
        """Idle and throttle faults of one batch, and the entities each evaluation covered."""
        c = self.config
        node, ts = batch.node, batch.ts
        st = self.nodes.setdefault(node, _Node())
        utils: dict[int, float] = {}
        throttled: list[Fault] = []
        for gpu in batch.gpus:
            i = gpu.index
            if gpu.lost or gpu.xid_events:
                st.fault_ts = max(st.fault_ts, ts)
            if gpu.lost:
                utils[i] = 0.0  # a GPU off the bus computes nothing
            elif gpu.util_gpu_pct is not None:
                utils[i] = gpu.util_gpu_pct
            bits = (gpu.clock_event_reasons or 0) & HW_SLOWDOWN_BITS
            if not bits:
                st.throttle[i] = 0
                continue
            st.slow_ts = max(st.slow_ts, ts)
            run = st.throttle[i] = st.throttle.get(i, 0) + 1
            if run >= c.throttle_k:
                rk = ranks_on(node, i)
                throttled.append(Fault(
                    check="gpu_throttled", category="hardware", entities=((node, i),),
                    summary=(f"GPU {i} of {node}{_ranks(rk)}: clock-event reasons "
                             f"0x{gpu.clock_event_reasons:x} ({reason_names(bits)}) for {run} "
                             f"samples in a row; SM clock {gpu.sm_clock_mhz} MHz, "
                             f"{gpu.temp_c} °C"),
                    first_seen=ts, ts=ts, ranks=rk, nodes=(node,), gpu_index=i,
                    observed=float(bits), expected=0.0, score=float(run),
                    evidence={"clock_event_reasons": f"0x{gpu.clock_event_reasons:x}",
                              "samples": run, "sm_clock_mhz": _f(gpu.sm_clock_mhz),
                              "temp_c": gpu.temp_c},
                ))
        throttle_scope: set[Entity] = {(node, g.index) for g in batch.gpus}
        if not utils:
            return [], throttled, None, throttle_scope
        mean = sum(utils.values()) / len(utils)
        if ts >= st.ts:
            st.util, st.ts = mean, ts
        reference = self._reference(node, ts)
        if math.isnan(reference) and len(utils) >= c.min_peers:
            reference = statistics.median(utils.values())  # a lone node: its own GPUs
            node_verdict = False
        else:
            node_verdict = True
        if math.isnan(reference):
            return [], throttled, None, throttle_scope
        busy = reference > c.busy_pct
        st.node_low = st.node_low + 1 if busy and node_verdict and mean < c.idle_pct else 0
        for i, u in utils.items():
            st.gpu_low[i] = st.gpu_low.get(i, 0) + 1 if busy and u < c.idle_pct else 0
        idle: list[Fault] = []
        hardware = ts - st.fault_ts <= c.hw_recent_s
        if st.node_low >= c.idle_k:
            lone = next(iter(utils)) if len(utils) == 1 else None
            idle.append(self._idle(node, lone, mean, reference, st.node_low, ts, hardware,
                                   ranks_on(node, None)))
        elif mean >= c.idle_pct or not node_verdict:
            for i, run in st.gpu_low.items():
                if run >= c.idle_k and i in utils:
                    idle.append(self._idle(node, i, utils[i], reference, run, ts, hardware,
                                           ranks_on(node, i)))
        scope: set[Entity] = {node} | throttle_scope
        return idle, throttled, scope, throttle_scope

    def _reference(self, node: str, ts: float) -> float:
        """Median utilization of the job's other nodes sampled within ``fresh_s`` of ``ts``."""
        fresh = self.config.fresh_s
        if len(self.nodes) > _EXACT_NODES:
            at, value = self._median
            if abs(ts - at) < 1.0:
                return value
            peers = [o.util for o in self.nodes.values()
                     if abs(o.ts - ts) <= fresh and not math.isnan(o.util)]
            value = statistics.median(peers) if peers else math.nan
            self._median = (ts, value)
            return value
        peers = [o.util for n, o in self.nodes.items()
                 if n != node and abs(o.ts - ts) <= fresh and not math.isnan(o.util)]
        return statistics.median(peers) if peers else math.nan

    def _idle(
        self, node: str, gpu: int | None, util: float, reference: float, run: int, ts: float,
        hardware: bool, ranks: tuple[int, ...],
    ) -> Fault:
        what = f"GPU {gpu} of {node}" if gpu is not None else f"{node}"
        cause = "; it recently reported a lost GPU or an XID error" if hardware else ""
        return Fault(
            check="node_idle", category="hardware" if hardware else "availability",
            entities=((node, gpu),) if gpu is not None else (node,),
            summary=(f"{what}{_ranks(ranks)}: utilization {util:.0f}% for {run} samples in a "
                     f"row while its peers' median is {reference:.0f}%{cause}"),
            first_seen=ts, ts=ts, ranks=ranks, nodes=(node,), gpu_index=gpu,
            observed=util, expected=reference, score=(reference - util) / max(reference, 1.0),
            evidence={"util_pct": util, "peer_median_pct": reference, "samples": run,
                      "idle_pct": self.config.idle_pct, "busy_pct": self.config.busy_pct},
        )


def _ranks(ranks: tuple[int, ...]) -> str:
    if not ranks:
        return ""
    if len(ranks) == 1:
        return f" (rank {ranks[0]})"
    return f" (ranks {', '.join(str(r) for r in ranks[:8])}{', …' if len(ranks) > 8 else ''})"


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)
