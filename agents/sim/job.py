"""A seeded training-job simulator in event time: what every node of a job sends, tick by tick.

One tick is one second of event time and, while the job trains, one optimizer step. The
simulator never sleeps: the caller decides the pace. The same spec, scenario and seed
give the same records, and a scenario changes nothing before it starts (every rank, node
and the job draw from their own random streams).

Per tick and node it emits a :class:`GpuSampleBatch` and, when the job stepped, a
:class:`StepBatch` of that node's ranks; checkpoint saves and loads go out as one
:class:`CheckpointEvent` per rank. Scenarios change the job through :attr:`knobs` and the
methods :meth:`JobSimulator.restart`, :meth:`JobSimulator.corrupt_shard` and
:meth:`JobSimulator.reseed_rank`.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Literal

from trainguard import __version__
from trainguard.agents.sim.gpus import Activity, NodeGpus
from trainguard.agents.sim.spec import DEFAULT_START_TS, Emit, JobSpec
from trainguard.agents.sim.state import Checkpoint, Knobs, digest
from trainguard.agents.sim.steps import StepModel
from trainguard.schemas.records import (
    AgentCounters,
    CheckpointEvent,
    GpuSampleBatch,
    Heartbeat,
    StepBatch,
    StepRecord,
)

if TYPE_CHECKING:
    from trainguard.agents.sim.scenario import Scenario

__all__ = ["JobSimulator"]

_DRIVER = "sim-550.0"
#: Ticks between a node agent's heartbeats (the agent's default: every 5 s).
HEARTBEAT_EVERY = 5
#: Stretches of ticks without optimizer steps: a checkpoint write, an eval, ranks down, a load.
_Phase = Literal["save", "eval", "down", "load"]


class JobSimulator:
    """One training job of ``spec``, optionally altered by ``scenario``; seeded, event time."""

    def __init__(
        self,
        spec: JobSpec,
        scenario: Scenario | None = None,
        *,
        seed: int = 0,
        start_ts: float = DEFAULT_START_TS,
    ) -> None:
        if scenario is not None:
            if scenario.spec != spec:
                raise ValueError(
                    f"scenario {scenario.name!r} was made for {scenario.spec}, not for {spec}"
                )
            spec = scenario.adapt(spec)
        #: The spec the job runs with (the scenario's schedule changes applied).
        self.spec = spec
        self.scenario = scenario
        self.seed = seed
        self.start_ts = start_ts
        self.knobs = Knobs.initial(spec, seed)
        #: Completed checkpoints, oldest first.
        self.checkpoints: list[Checkpoint] = []
        self.finished = False
        self._t = 0
        self._step = 0
        self._phases: deque[tuple[_Phase, int]] = deque()
        self._nodes = spec.node_names()
        self._node_keys = [n.encode() for n in self._nodes]
        self._key = spec.job_id.encode()
        self._agent_ids = [digest(f"agent|{spec.job_id}|{n}|{seed}", 6) for n in self._nodes]
        self._gpus = [NodeGpus(n, spec.gpus_per_node, seed=seed) for n in self._nodes]
        self._sample_seq = [0] * spec.nodes
        self._step_seq = [0] * spec.nodes
        self._model = StepModel(spec, seed)
        if scenario is not None:
            scenario.bind(self)

    @property
    def t(self) -> int:
        """Ticks elapsed."""
        return self._t

    @property
    def step(self) -> int:
        """The last completed optimizer step (0 before the first)."""
        return self._step

    @property
    def nodes(self) -> list[str]:
        """Node names, in rank order."""
        return list(self._nodes)

    def node_of(self, rank: int) -> str:
        """The node ``rank`` runs on."""
        if not 0 <= rank < self.spec.world_size:
            raise ValueError(f"rank {rank} out of range 0..{self.spec.world_size - 1}")
        return self._nodes[rank // self.spec.gpus_per_node]

    def ranks_of(self, node: str) -> list[int]:
        """The ranks running on ``node``."""
        try:
            i = self._nodes.index(node)
        except ValueError:
            names = ", ".join(self._nodes)
            raise ValueError(f"unknown node {node!r}; expected one of: {names}") from None
        g = self.spec.gpus_per_node
        return list(range(i * g, (i + 1) * g))

    # -- what scenarios call ---------------------------------------------------------

    def restart(self, down_s: int) -> None:
        """Stop every rank now; ``down_s`` ticks later all load the last checkpoint and resume.

        Without a completed checkpoint the job starts over from step 0 (nothing to load).
        """
        if down_s < 1:
            raise ValueError(f"down_s must be >= 1, got {down_s}")
        self._phases = deque([("down", down_s), ("load", 1)])
        self.knobs.hung = False

    def corrupt_shard(self, rank: int, *, touch_params: bool = True) -> Checkpoint:
        """Modify ``rank``'s shard of the last checkpoint on disk; its next load shows it.

        With ``touch_params`` the rank loads different weights, so its parameters diverge.
        """
        if not self.checkpoints:
            raise RuntimeError(f"no checkpoint to corrupt at tick {self._t}; save one first")
        ckpt = self.checkpoints[-1]
        old_digest, lineage = ckpt.disk[rank]
        new_lineage = f"{lineage}|corrupt" if touch_params else lineage
        ckpt.disk[rank] = (digest(f"corrupt|{old_digest}", 32), new_lineage)
        return ckpt

    def reseed_rank(self, rank: int, salt: str) -> None:
        """Give ``rank`` a different random stream (data order, dropout) from now on."""
        self._model.reseed(rank, salt)

    # -- the tick --------------------------------------------------------------------

    def tick(self) -> list[Emit]:
        """Advance one second of event time; return what every node sends in it."""
        t = self._t
        ts = self.start_ts + t
        if self.scenario is not None:
            self.scenario.on_tick(self, t)
        events: list[CheckpointEvent] = []
        steps: list[StepRecord] = []
        activity = self._advance(ts, steps, events)
        spec, knobs = self.spec, self.knobs
        g = spec.gpus_per_node
        out: list[Emit] = []
        k = 0
        for i, node in enumerate(self._nodes):
            if i in knobs.agent_down:  # its agent is stopped: its ranks' steps go nowhere
                while k < len(steps) and steps[k].rank < (i + 1) * g:
                    k += 1
                continue
            in_job = knobs.in_job[i] and not self.finished
            acts: list[Activity] = [
                activity if in_job and knobs.alive[i * g + j] else "free" for j in range(g)
            ]
            overrides = {j: o for (n, j), o in knobs.gpu.items() if n == i}
            batch = GpuSampleBatch(
                cluster=spec.cluster, node=node, ts=ts, seq=self._sample_seq[i],
                agent_id=self._agent_ids[i], driver_version=_DRIVER,
                gpus=self._gpus[i].sample(acts, overrides),
                job_id=spec.job_id if in_job else None,
            )
            self._sample_seq[i] += 1
            out.append(Emit("samples", self._key if in_job else self._node_keys[i], batch))
            mine: list[StepRecord] = []
            while k < len(steps) and steps[k].rank < (i + 1) * g:
                mine.append(steps[k])
                k += 1
            if mine:
                out.append(Emit("steps", self._key, StepBatch(
                    cluster=spec.cluster, node=node, job_id=spec.job_id, ts=ts,
                    seq=self._step_seq[i], agent_id=self._agent_ids[i], steps=mine,
                )))
                self._step_seq[i] += 1
            if t % HEARTBEAT_EVERY == 0:
                # As the node agents do: liveness and their own counters (nothing spooled
                # or dropped in a simulation), keyed by the job while in it, else by node.
                beat = Heartbeat(
                    cluster=spec.cluster, node=node, ts=ts, seq=t // HEARTBEAT_EVERY,
                    agent_id=self._agent_ids[i], agent_version=__version__,
                    uptime_s=float(t), backend="simulated", gpu_count=g,
                    counters=AgentCounters(batches_sent=self._sample_seq[i] + self._step_seq[i],
                                           steps_received=self._step_seq[i] * g),
                    job_id=spec.job_id if in_job else None,
                )
                out.append(Emit("heartbeats", self._key if in_job else self._node_keys[i], beat))
        out.extend(Emit("steps", self._key, e) for e in events
                   if e.rank // g not in knobs.agent_down)
        self._t += 1
        return out

    def run(self, ticks: int) -> list[Emit]:
        """``ticks`` ticks in a row; everything they emit, in order."""
        out: list[Emit] = []
        for _ in range(ticks):
            out.extend(self.tick())
        return out

    def _advance(
        self, ts: float, steps: list[StepRecord], events: list[CheckpointEvent]
    ) -> Activity:
        """Move the job on by one tick; return what its live ranks' GPUs do."""
        if self._phases:
            kind, left = self._phases.popleft()
            if left > 1:
                self._phases.appendleft((kind, left - 1))
            if kind == "save":
                if left == 1:
                    events.extend(self._save(ts))
                return "wait"
            if kind == "eval":
                return "eval"
            if kind == "down":
                return "free"
            events.extend(self._load(ts))
            return "wait"
        if self.finished:
            return "free"
        if self.knobs.hung:
            return "spin"
        self._step += 1
        steps.extend(self._model.records(self._step, ts, self.knobs, self._nodes))
        spec, s = self.spec, self._step
        if s >= spec.total_steps:
            self.finished = True
            return "busy"
        if s % spec.checkpoint_every == 0:
            if spec.checkpoint_pause_s == 0:
                events.extend(self._save(ts))
            else:
                self._phases.append(("save", spec.checkpoint_pause_s))
        if spec.eval_every and s % spec.eval_every == 0:
            self._phases.append(("eval", spec.eval_s))
        return "busy"

    def _save(self, ts: float) -> list[CheckpointEvent]:
        spec, knobs, s = self.spec, self.knobs, self._step
        ckpt = Checkpoint(checkpoint_id=f"{spec.job_id}/step-{s}", step=s)
        for r in knobs.live_ranks():
            shard = digest(f"shard|{spec.job_id}|{ckpt.checkpoint_id}|{r}|{knobs.lineage[r]}", 32)
            ckpt.saved[r] = shard
            ckpt.disk[r] = (shard, knobs.lineage[r])
        self.checkpoints.append(ckpt)
        return [self._event(ckpt, r, ts, "save", d) for r, d in ckpt.saved.items()]

    def _load(self, ts: float) -> list[CheckpointEvent]:
        knobs = self.knobs
        knobs.revive()
        events: list[CheckpointEvent] = []
        if not self.checkpoints:
            self._step = 0
            knobs.lineage = ["0"] * len(knobs.lineage)
        else:
            ckpt = self.checkpoints[-1]
            self._step = ckpt.step
            for r in knobs.live_ranks():
                if r in ckpt.disk:
                    shard, knobs.lineage[r] = ckpt.disk[r]
                    events.append(self._event(ckpt, r, ts, "load", shard))
        if self.scenario is not None:
            self.scenario.after_load(self)
        return events

    def _event(
        self, ckpt: Checkpoint, rank: int, ts: float, action: Literal["save", "load"], shard: str
    ) -> CheckpointEvent:
        return CheckpointEvent(
            cluster=self.spec.cluster, job_id=self.spec.job_id, node=self.node_of(rank),
            rank=rank, step=ckpt.step, ts=ts, action=action,
            checkpoint_id=ckpt.checkpoint_id, digest=shard,
        )
