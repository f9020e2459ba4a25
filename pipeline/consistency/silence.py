"""``agent_silent``: a node agent that stops heartbeating while its GPUs run a job pages.

Stopping the agent on one's own node used to raise nothing but ``rank_missing``, and only
while the other ranks kept stepping. Here the silence itself is the signal. Per node,
:class:`SilenceWatch` keeps when its agent was last heard and the job its GPUs belong to
(the job its agent names on its heartbeats and sample batches, or sends steps of). A
node with a job whose agent was last heard more than ``agent_silent_s`` before the node's
*now* is silent: an ``availability`` finding blaming the node, which pages. It clears as
soon as the agent is heard again.

*Heard* is the agent's newest heartbeat, sample batch or step batch (all stamped by the
agent itself): a dead agent stops all three, and a node's sample batches travel in the
same partition as its job's other nodes' (keyed by job), so a worker whose heartbeat topic
is read behind its samples topic (a backlog after a restart) does not page. Only nodes
whose agent sent a heartbeat are judged.

A node is judged on event time, never on the wall clock alone. Its *now* is the later of

* its job's newest record (the job's other nodes: same partition as its heartbeats, so
  consistent, and a replayed or accelerated job is judged on its own clock), and
* its own event clock (:class:`~trainguard.pipeline.clocks.EventClocks`: its newest record,
  moving on at wall-clock speed once its records stop, so a node that sends nothing at all,
  alone in its job, is still judged), *capped by the newest record this worker saw from
  anyone*.

The cap is what keeps a quiet *pipeline* from paging: when nothing arrives from anyone (a
Kafka outage, a stalled consumer, the end of a replay or simulation) no node's time moves
and nobody is silent; one node stopping while the rest of the input flows is. The
finding's time is the event time the silence was decided, ``last heartbeat +
agent_silent_s``, so a replay gives the same finding.

An agent restarting mid-job (a new ``agent_id``, or its uptime going back) is counted in
``restarts`` and logged with the node, the job and both agent ids: a restart is worth
knowing (the agent's counters start over) but is no fault by itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trainguard.pipeline.clocks import EventClocks
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.findings import Fault, FindingTracker
from trainguard.schemas.records import Finding, Heartbeat

__all__ = ["SilenceWatch"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Node:
    cluster: str
    #: Event time of its newest heartbeat (``-inf``: none yet, never judged).
    last_hb: float = -math.inf
    #: Event time of the newest record its agent sent (heartbeat, samples, steps).
    heard: float = -math.inf
    agent_id: str = ""
    uptime_s: float = 0.0
    #: The job its GPUs belong to, as of its newest record saying so (``None``: idle).
    job: str | None = None
    job_ts: float = -math.inf
    #: The job an open ``agent_silent`` finding blames it in (until it clears).
    paged: str | None = None
    #: The job it ran as of its previous heartbeat (a restart then is mid-job).
    hb_job: str | None = None


class SilenceWatch:
    """Every node's heartbeats and job; judges which agents went silent (see module doc).

    ``clock`` is the wall clock. At most ``max_nodes`` nodes are tracked (the least
    recently heard forgotten first, counted in ``evicted``); a node not heard for
    ``agent_forget_s`` of wall-clock time is forgotten.
    """

    def __init__(self, config: ConsistencyConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._clocks = EventClocks(clock, max_keys=config.max_nodes)
        self._nodes: OrderedDict[str, _Node] = OrderedDict()
        #: Per job, the findings of its silent nodes (one tracker per job with any).
        self._trackers: dict[str, FindingTracker] = {}
        #: The newest event time of any record seen (the pipeline is live up to it).
        self._newest = -math.inf
        #: Agents that restarted (new id, or uptime back) while their node ran a job.
        self.restarts = 0
        self.evicted = 0
        self.forgotten = 0

    @property
    def nodes(self) -> int:
        """Nodes tracked."""
        return len(self._nodes)

    def heartbeat(self, hb: Heartbeat) -> None:
        """Take one heartbeat (older ones than the node's newest change nothing)."""
        node = self._node(hb.node, hb.cluster)
        if hb.ts <= node.last_hb:
            return
        restarted = hb.agent_id != node.agent_id or hb.uptime_s < node.uptime_s
        if node.agent_id and restarted and node.hb_job is not None:
            self.restarts += 1
            log.warning("agent restarted mid-job node=%s job=%s old_agent=%s new_agent=%s "
                        "uptime_s=%.1f gap_s=%.1f restarts=%d", hb.node, node.hb_job,
                        node.agent_id, hb.agent_id, hb.uptime_s, hb.ts - node.last_hb,
                        self.restarts)
        node.last_hb, node.agent_id, node.uptime_s = hb.ts, hb.agent_id, hb.uptime_s
        node.hb_job = hb.job_id or node.job
        self._advance(node, hb.node, hb.ts)

    def working(self, node_name: str, cluster: str, job: str | None, ts: float) -> None:
        """The node's record at ``ts`` says its GPUs run ``job`` (``None``: no job)."""
        # Once per sample and step batch: :meth:`_node` and :meth:`_advance` inlined.
        nodes = self._nodes
        node = nodes.get(node_name)
        if node is None:
            node = self._node(node_name, cluster)
        else:
            nodes.move_to_end(node_name)  # most recently heard last
        if ts >= node.job_ts:
            node.job, node.job_ts = job, ts
        if ts > node.heard:
            node.heard = ts
        self._clocks.advance(node_name, ts)
        if ts > self._newest and math.isfinite(ts):
            self._newest = ts

    def _advance(self, node: _Node, name: str, ts: float) -> None:
        if ts > node.heard:
            node.heard = ts
        self._clocks.advance(name, ts)
        if ts > self._newest and math.isfinite(ts):
            self._newest = ts

    def judge(self, job_newest: Callable[[str], float], now: float | None = None,
              ranks_on: Callable[[str, str], Iterable[int]] | None = None) -> list[Finding]:
        """The findings of every node gone silent, or back, by now.

        ``job_newest(job)`` is the newest event time of the job's records; ``now`` (an
        explicit event time, for replays and tests) overrides every node's. ``ranks_on(job,
        node)`` names the ranks a silent node ran, for the finding.
        """
        self._forget_idle()
        silence = self.config.agent_silent_s
        faults: dict[str, list[Fault]] = {}
        scope: dict[str, set[str]] = {}
        back: dict[str, float] = {}
        for name, node in self._nodes.items():
            # A node paged for a job is judged for it until it clears, even if its first
            # records after a restart name no job yet.
            job = node.paged or node.job
            if job is None or not math.isfinite(node.last_hb):
                continue
            at = now if now is not None else max(
                job_newest(job), min(self._clocks.now(name), self._newest))
            scope.setdefault(job, set()).add(name)
            if at - node.heard > silence:
                ranks = tuple(ranks_on(job, name)) if ranks_on is not None else ()
                faults.setdefault(job, []).append(self._fault(name, node, job, ranks, at))
            else:
                back[job] = max(back.get(job, -math.inf), node.heard)
        return self._update(faults, scope, back)

    def _update(self, faults: dict[str, list[Fault]], scope: dict[str, set[str]],
                back: dict[str, float]) -> list[Finding]:
        """Each job's faults through its tracker: new silences open, returned nodes clear."""
        out: list[Finding] = []
        for job in [j for j in self._trackers if j not in scope]:
            del self._trackers[job]  # its nodes were forgotten: the alert resolves unrefreshed
        for job in set(faults) | set(self._trackers):
            tracker = self._trackers.get(job)
            if tracker is None:
                cluster = self._nodes[next(iter(scope[job]))].cluster
                tracker = self._trackers[job] = FindingTracker(
                    cluster, job, clear_steps=1, repeat_s=self.config.repeat_s,
                    max_open=self.config.max_open_findings)
            out += tracker.update("agent_silent", faults.get(job, []), scope[job],
                                  back.get(job))
            for name in scope[job]:
                self._nodes[name].paged = job if tracker.is_blamed("agent_silent", name) else None
            if not tracker.open_findings():
                del self._trackers[job]
        return out

    def _fault(self, name: str, node: _Node, job: str, ranks: tuple[int, ...],
               at: float) -> Fault:
        silence, repeat = self.config.agent_silent_s, self.config.repeat_s
        decided = node.heard + silence
        # Decided at last heartbeat + silence; later evaluations on a ``repeat_s`` grid from
        # there, so a persisting silence is re-emitted and a replay gives the same times.
        ts = decided + (math.floor((at - decided) / repeat) * repeat if repeat > 0 else 0.0)
        on = f" (ranks {', '.join(map(str, ranks[:8]))}{', …' if len(ranks) > 8 else ''})" \
            if ranks else ""
        return Fault(
            check="agent_silent", category="availability", entities=(name,),
            summary=(f"node {name}: its agent {node.agent_id} sent nothing (no heartbeat, no "
                     f"samples) for over {silence:g} s while its GPUs run job {job}{on}: the "
                     "agent stopped, was stopped, or its node is cut off"),
            first_seen=node.heard, ts=max(decided, ts), ranks=ranks, nodes=(name,),
            observed=at - node.heard, expected=silence, score=at - node.heard,
            evidence={"last_heartbeat_ts": node.last_hb, "last_heard_ts": node.heard,
                      "agent_id": node.agent_id, "agent_silent_s": silence},
        )

    def saved(self, job: str) -> dict[str, Any]:
        """The state of ``job``'s nodes (what :meth:`restore` takes on another worker)."""
        return self.saved_jobs([job])[job]

    def saved_jobs(self, jobs: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`saved` of each of ``jobs``, in one pass over the nodes (a partition's)."""
        nodes: dict[str, list[tuple[str, _Node, Any]]] = {job: [] for job in jobs}
        for name, node in self._nodes.items():
            job = node.paged or node.job
            held = nodes.get(job) if job is not None else None
            if held is not None:
                held.append((name, node, self._clocks.saved(name)))
        return {job: {"nodes": held, "tracker": self._trackers.get(job)}
                for job, held in nodes.items()}

    @staticmethod
    def valid_saved(saved: object) -> bool:
        """Whether ``saved`` has the shape :meth:`saved` gives (read from a blob)."""
        if not (isinstance(saved, dict) and isinstance(saved.get("nodes"), list)
                and isinstance(saved.get("tracker"), FindingTracker | None)):
            return False
        return all(isinstance(item, list | tuple) and len(item) == 3
                   and isinstance(item[0], str) and isinstance(item[1], _Node)
                   and isinstance(item[2], float | None) for item in saved["nodes"])

    def restore(self, job: str, saved: dict[str, Any]) -> int:
        """Take ``job``'s nodes over from a :meth:`saved` state; return how many."""
        nodes: list[tuple[str, _Node, float | None]] = saved["nodes"]
        for name, node, clock in nodes:
            held = self._nodes.get(name)
            if held is not None and held.heard >= node.heard:
                continue  # this worker heard it since
            self._node(name, node.cluster)
            self._nodes[name] = node
            if clock is not None:
                self._clocks.restore(name, clock)
            if math.isfinite(node.heard):
                self._newest = max(self._newest, node.heard)
        tracker = saved["tracker"]
        if tracker is not None and job not in self._trackers:
            self._trackers[job] = tracker
        return len(nodes)

    def drop(self, job: str) -> None:
        """Forget ``job``'s nodes (its partition went to another worker)."""
        for name in [n for n, node in self._nodes.items() if (node.paged or node.job) == job]:
            self._drop(name)
        self._trackers.pop(job, None)

    def _node(self, name: str, cluster: str) -> _Node:
        node = self._nodes.get(name)
        if node is not None:
            self._nodes.move_to_end(name)  # most recently heard last
            return node
        node = _Node(cluster)
        while len(self._nodes) >= self.config.max_nodes:
            self._drop(next(iter(self._nodes)))
            self.evicted += 1
        self._nodes[name] = node
        return node

    def _forget_idle(self) -> None:
        limit = self.config.agent_forget_s
        for name in [n for n in self._nodes if self._clocks.idle_for(n) > limit]:
            self._drop(name)
            self.forgotten += 1

    def _drop(self, name: str) -> None:
        del self._nodes[name]
        self._clocks.forget(name)
