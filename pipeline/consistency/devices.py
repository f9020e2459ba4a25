"""Cross-node checks on a job's GPU samples: idle nodes and GPUs, throttled GPUs.

Only sample batches that name their job are used (the agent knows it from its ranks'
step reports): a node is compared with the *other nodes of its job*, at about the same
event time, so a job-wide dip (checkpoint save, eval, restart) lowers the reference too
and nothing fires.

* ``node_idle``: a node whose mean utilization is below ``idle_pct`` while its peers'
  median is above ``busy_pct``, for ``idle_k`` samples in a row (or a single GPU so far
  below while its node is not). ``hardware`` when the node recently reported a lost GPU
  or an XID, else ``availability``.
  A GPU whose training process exited or that fell off the bus is judged on its first
  such sample instead, against its peers' samples of the same tick (see
  :class:`_Released`): the fast path that pages a killed rank within a second.
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

from trainguard.pipeline.consistency.config import HW_SLOWDOWN_BITS, ConsistencyConfig
from trainguard.pipeline.consistency.findings import Entity, Fault
from trainguard.schemas.records import GpuSampleBatch

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
    #: GPUs seen running a compute process of the job: only those can be "released".
    used: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Released:
    """GPUs of one node sample whose process exited or that fell off the bus.

    Held until half of the job's other nodes reported a sample of the same tick: if their
    median is still busy, this node is the odd one out (a killed rank, a lost GPU); if
    they went idle too, the whole job stopped (a restart, the end) and nothing fires.
    """

    node: str
    ts: float
    #: GPU index → why it counts as released, in words.
    gpus: dict[int, str]
    #: Every GPU of the node sampled is released: blame the node, not each GPU.
    whole_node: bool


class DeviceWatch:
    """The GPU-sample state of one job, node by node."""

    def __init__(self, config: ConsistencyConfig) -> None:
        self.config = config
        self.nodes: dict[str, _Node] = {}
        self._median: tuple[float, float] = (-math.inf, math.nan)  # (computed at, value)
        self._released: list[_Released] = []

    def slowed(self, node: str, now: float) -> bool:
        """The node's GPUs reported thermal or HW slowdown within ``hw_recent_s`` of ``now``."""
        st = self.nodes.get(node)
        return st is not None and now - st.slow_ts <= self.config.hw_recent_s

    def observe(
        self, batch: GpuSampleBatch, ranks_on: Callable[[str, int | None], tuple[int, ...]]
    ) -> tuple[list[Fault], list[Fault], set[Entity] | None, set[Entity]]:
        """Idle and throttle faults of one batch, and the entities each evaluation covered."""
        idle, throttled, scope, throttle_scope = self._observe(batch, ranks_on)
        # This batch may be the peer sample a held release was waiting for.
        idle += self._judge_released(batch.ts, ranks_on)
        return idle, throttled, scope, throttle_scope

    def _observe(
        self, batch: GpuSampleBatch, ranks_on: Callable[[str, int | None], tuple[int, ...]]
    ) -> tuple[list[Fault], list[Fault], set[Entity] | None, set[Entity]]:
        c = self.config
        node, ts = batch.node, batch.ts
        st = self.nodes.setdefault(node, _Node())
        utils: dict[int, float] = {}
        throttled: list[Fault] = []
        released: dict[int, str] = {}
        for gpu in batch.gpus:
            i = gpu.index
            if gpu.compute_procs:
                st.used.add(i)
            elif i in st.used and (gpu.lost or gpu.compute_procs == 0):
                released[i] = ("fell off the bus (NVML: GPU is lost)" if gpu.lost
                               else "its training process exited (no compute process left)")
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
        if released and not self._already_low(st, released):
            self._released.append(_Released(node, ts, released,
                                            whole_node=len(released) == len(utils) > 1))
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

    def _already_low(self, st: _Node, released: dict[int, str]) -> bool:
        """The node (or these GPUs) already count as idle: the usual path has them."""
        k = self.config.idle_k
        return st.node_low >= k or all(st.gpu_low.get(i, 0) >= k for i in released)

    def judge(
        self, now: float, ranks_on: Callable[[str, int | None], tuple[int, ...]]
    ) -> list[Fault]:
        """Decide held releases now that a whole input batch is in (its peers may be)."""
        return self._judge_released(now, ranks_on) if self._released else []

    def _judge_released(
        self, now: float, ranks_on: Callable[[str, int | None], tuple[int, ...]]
    ) -> list[Fault]:
        """Decide the held releases whose peers' same-tick samples are in (or that waited)."""
        c = self.config
        out: list[Fault] = []
        keep: list[_Released] = []
        for rel in self._released:
            others = [(n, o) for n, o in self.nodes.items()
                      if n != rel.node and abs(o.ts - rel.ts) <= c.fresh_s]
            same_tick = [o.util for _, o in others
                         if o.ts >= rel.ts - c.exit_align_s and not math.isnan(o.util)]
            if not others or len(same_tick) * 2 < len(others):
                if now - rel.ts < c.exit_wait_s:
                    keep.append(rel)  # wait for more peers; past the wait, idle_k decides
                continue
            reference = statistics.median(same_tick)
            if reference <= c.busy_pct:
                continue  # the peers stopped too: a job-wide stop, nobody to blame
            st = self.nodes[rel.node]
            hardware = rel.ts - st.fault_ts <= c.hw_recent_s
            if rel.whole_node:
                st.node_low = max(st.node_low, c.idle_k)
                why = "; ".join(sorted(set(rel.gpus.values())))
                out.append(self._idle(rel.node, None, 0.0, reference, 1, rel.ts, hardware,
                                      ranks_on(rel.node, None), why))
                continue
            for i, why in sorted(rel.gpus.items()):
                st.gpu_low[i] = max(st.gpu_low.get(i, 0), c.idle_k)
                out.append(self._idle(rel.node, i, 0.0, reference, 1, rel.ts, hardware,
                                      ranks_on(rel.node, i), why))
        self._released = keep
        return out

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
        hardware: bool, ranks: tuple[int, ...], released: str = "",
    ) -> Fault:
        what = f"GPU {gpu} of {node}" if gpu is not None else f"{node}"
        cause = "; it recently reported a lost GPU or an XID error" if hardware else ""
        seen = (f"{released}" if released
                else f"utilization {util:.0f}% for {run} samples in a row")
        return Fault(
            check="node_idle", category="hardware" if hardware else "availability",
            entities=((node, gpu),) if gpu is not None else (node,),
            summary=(f"{what}{_ranks(ranks)}: {seen} while its peers' median utilization is "
                     f"{reference:.0f}%{cause}"),
            first_seen=ts, ts=ts, ranks=ranks, nodes=(node,), gpu_index=gpu,
            observed=util, expected=reference, score=(reference - util) / max(reference, 1.0),
            evidence={"util_pct": util, "peer_median_pct": reference, "samples": run,
                      "idle_pct": self.config.idle_pct, "busy_pct": self.config.busy_pct,
                      "released": released or None},
        )


def _ranks(ranks: tuple[int, ...]) -> str:
    if not ranks:
        return ""
    if len(ranks) == 1:
        return f" (rank {ranks[0]})"
    return f" (ranks {', '.join(str(r) for r in ranks[:8])}{', …' if len(ranks) > 8 else ''})"


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)
