"""Everything the consistency stage knows about one job, and the order checks run in.

A :class:`JobState` owns the job's step assembler, the per-rank memories of the peer
checks, the fingerprint references (and the manifests behind them), the GPU-sample state
of its nodes, its recent checkpoint saves, its ranks' process events and its open
findings. The stage feeds it records; it runs every check of a step when the step closes,
the device checks on every sample batch, and the rank-process checks as its time moves.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import TypeVar

from msgspec.structs import replace

from trainguard.pipeline.consistency.agreement import param_divergence, value_mismatch
from trainguard.pipeline.consistency.assembler import ClosedStep, StepAssembler
from trainguard.pipeline.consistency.checkpoints import CheckpointWatch
from trainguard.pipeline.consistency.clock import ClockWatch
from trainguard.pipeline.consistency.columns import StepColumns, step_columns
from trainguard.pipeline.consistency.config import ConsistencyConfig
from trainguard.pipeline.consistency.conflicts import claim_fault, step_conflicts
from trainguard.pipeline.consistency.continuity import RestartContinuity
from trainguard.pipeline.consistency.devices import DeviceWatch
from trainguard.pipeline.consistency.findings import Entity, Fault, FindingTracker
from trainguard.pipeline.consistency.fingerprints import FingerprintWatch
from trainguard.pipeline.consistency.manifests import ManifestMemory
from trainguard.pipeline.consistency.peers import PeerChecks
from trainguard.pipeline.consistency.presence import job_stalled, rank_missing, step_skew
from trainguard.pipeline.consistency.rank_events import RankEventWatch
from trainguard.pipeline.consistency.trajectory import TrajectoryWatch
from trainguard.pipeline.consistency.witness import WitnessWatch
from trainguard.schemas.ranks import RankEvent
from trainguard.schemas.records import (
    CheckName,
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    RankClaim,
    StepRecord,
    WitnessReport,
)

__all__ = ["JobState"]

#: Cluster name of a job known only from bare step records (they carry none).
UNKNOWN_CLUSTER = "unknown"

_Timed = TypeVar("_Timed", StepRecord, CheckpointEvent, WitnessReport)


class _StepScope(Container[Entity]):
    """The entities a closed step covered: its ranks, their nodes, and job-wide keys.

    Built lazily: only blamed entities are ever looked up, usually none.
    """

    def __init__(self, cols: StepColumns) -> None:
        self._cols = cols
        self._ranks: set[int] | None = None
        self._nodes: set[str] | None = None

    def __contains__(self, entity: object) -> bool:
        if isinstance(entity, int):
            if self._ranks is None:
                self._ranks = set(self._cols.ranks.tolist())
            return entity in self._ranks
        if entity == "*" or isinstance(entity, tuple):
            return True  # job-wide keys are evaluated at every step
        if self._nodes is None:
            self._nodes = set(self._cols.nodes)
        return entity in self._nodes


class _Everything(Container[Entity]):
    def __contains__(self, entity: object) -> bool:
        return True


_EVERYTHING = _Everything()


def _held(cols: StepColumns, ranks: Sequence[int]) -> set[str | None]:
    """The env fingerprints ``ranks`` reported at the step of ``cols``."""
    blamed = set(ranks)
    return {v for r, v in zip(cols.ranks.tolist(), cols.env_fingerprint, strict=True)
            if r in blamed}


class JobState:
    """One job's assembler, check state and open findings."""

    def __init__(self, job_id: str, cluster: str | None, config: ConsistencyConfig) -> None:
        self.job_id = job_id
        self.config = config
        self.asm = StepAssembler(config)
        self.tracker = FindingTracker(
            cluster or UNKNOWN_CLUSTER, job_id, clear_steps=config.clear_steps,
            repeat_s=config.repeat_s, max_open=config.max_open_findings)
        self.peers = PeerChecks(config)
        self.env = FingerprintWatch("code_fingerprint", "env fingerprint", grouped=False)
        self.seeds = FingerprintWatch("seed_mismatch", "seed fingerprint", grouped=True,
                                      data_epochs=True)
        self.devices = DeviceWatch(config)
        self.clocks = ClockWatch(config)
        self.checkpoints = CheckpointWatch(config.max_checkpoints, config.checkpoint_keep_s,
                                           config.max_world_size)
        self.pending_events: list[CheckpointEvent] = []
        self.witness = WitnessWatch(config.witness_wait_s, config.max_witness_paths,
                                    config.checkpoint_keep_s)
        self.pending_witness: list[WitnessReport] = []
        #: Refused rank claims reported by agents, until the batch's checks ran.
        self.pending_claims: list[Fault] = []
        #: Rank claims agents reported (a second live process on their node).
        self.claims = 0
        #: Rank processes' exits, stops, goodbyes and waits (``rank_exited``, ``rank_hung``).
        self.ranks = RankEventWatch(config)
        #: The files behind the env fingerprints seen (named by ``code_fingerprint``).
        self.manifests = ManifestMemory(config.max_manifests)
        #: The job's own past across restarts (``code_changed``, ``restart_divergence``).
        self.continuity = RestartContinuity(config, job_id)
        #: The job's aggregate series against their own recent past (``job_shift``).
        self.trajectory = TrajectoryWatch(config)
        self.steps_closed = 0
        self.last_step = -1
        self.last_step_ts = -math.inf
        self._samples_ts = -math.inf
        self._samples_seen = False

    @property
    def cluster(self) -> str:
        """The job's cluster (``"unknown"`` until a batch or event names it)."""
        return self.tracker.cluster

    def name_cluster(self, cluster: str) -> None:
        """Learn the cluster from a record that carries one."""
        if self.tracker.cluster == UNKNOWN_CLUSTER:
            self.tracker.cluster = cluster

    def aligned(self, records: Sequence[_Timed]) -> Sequence[_Timed]:
        """``records`` (steps, checkpoint events) with the times of skewed nodes realigned.

        A node whose clock runs behind would otherwise open every step early and close it
        before its peers' records arrive; one ahead would look steps behind.
        """
        clocks = self.clocks
        if not clocks.skewed:
            return records
        return [r if (ts := clocks.aligned(r.node, r.ts)) == r.ts else replace(r, ts=ts)
                for r in records]

    def add_samples(self, batch: GpuSampleBatch, broker_ts: float | None = None) -> list[Finding]:
        """Run the device checks on one of the job's sample batches.

        ``broker_ts`` (its Kafka timestamp) measures the node's clock; a node skewed beyond
        the bound is reported (``clock_skew``) and its samples realigned for the checks.
        """
        out: list[Finding] = []
        if broker_ts is not None:
            node = batch.node
            self.clocks.observe(node, batch.ts, broker_ts)
            aligned = self.clocks.aligned(node, batch.ts)
            skewed = self.clocks.judge(node, aligned, self.asm.ranks_on)
            out += self.tracker.update("clock_skew", skewed, {node}, aligned)
            if aligned != batch.ts:
                batch = replace(batch, ts=aligned)
        self.asm.advance(batch.ts)
        self._samples_ts = max(self._samples_ts, batch.ts)
        self._samples_seen = True
        idle, throttled, idle_scope, throttle_scope = self.devices.observe(
            batch, self.asm.ranks_on)
        out += self.tracker.update("node_idle", idle, idle_scope, batch.ts)
        out += self.tracker.update("gpu_throttled", throttled, throttle_scope, batch.ts)
        return out

    def claimed(self, claims: Sequence[RankClaim], node: str) -> None:
        """An agent refused these processes: each claimed a rank another live one holds."""
        self.claims += len(claims)
        self.pending_claims += [claim_fault(c, node) for c in claims]

    def rank_events(self, events: Sequence[RankEvent], node: str) -> None:
        """Take the rank events ``node``'s agent sent; they move the job's time too."""
        clocks = self.clocks
        if clocks.skewed:
            shifted = []
            for ev in events:
                delta = clocks.aligned(node, ev.ts) - ev.ts
                shifted.append(ev if delta == 0 else replace(
                    ev, ts=ev.ts + delta,
                    since=None if ev.since is None else ev.since + delta))
            events = shifted
        self.asm.advance(max(ev.ts for ev in events))
        self.ranks.observe(events, node, self.asm.world_size)

    def judge_ranks(self, now: float) -> list[Finding]:
        """``rank_exited`` and ``rank_hung`` at event time ``now`` (nothing when idle)."""
        if not self.ranks.active:
            return []
        asm = self.asm

        def last_ts(rank: int) -> float:
            s = asm.slot(rank)
            return -math.inf if s is None else asm.last_ts[s]

        def node_of(rank: int) -> str:
            s = asm.slot(rank)
            return self.ranks.nodes.get(rank) or (asm.rank_node[s] if s is not None else "")

        exited, hung = self.ranks.judge(now, last_ts, node_of, asm.world_size)
        # An exit is evidence: it does not clear (its entity names the process).
        out = self.tracker.update("rank_exited", exited, None) if exited else []
        if hung is not None:
            out += self.tracker.update("rank_hung", hung, _EVERYTHING, now)
        return out

    def finish(self, now: float) -> list[Finding]:
        """After a batch of records: check loads, close due steps, look for a stall."""
        out: list[Finding] = []
        if self.pending_claims:
            claims, self.pending_claims = self.pending_claims, []
            # Evidence does not clear: the claimant stays blamed until the job is forgotten.
            out += self.tracker.update("conflicting_report", claims, None)
        # A released GPU sampled last in the batch: its peers' samples of the tick came
        # before it, so decide now rather than on the job's next sample batch.
        held = self.devices.judge(self._samples_ts, self.asm.ranks_on)
        if held:
            out += self.tracker.update("node_idle", held, None, self._samples_ts)
        if self.pending_events:
            events, self.pending_events = self.pending_events, []
            digest, clashes = self.checkpoints.observe(events, self.asm.watermark)
            out += self.tracker.update("checkpoint_digest", digest, None)
            # Evidence does not clear: a conflict stays blamed until the job is forgotten.
            out += self.tracker.update("conflicting_report", clashes, None)
            self.witness.saves(events)
        if self.pending_witness:
            reports, self.pending_witness = self.pending_witness, []
            out += self.tracker.update("witness_mismatch", self.witness.reports(reports), None)
        out += self.close(now)
        if self._samples_seen:
            self._samples_seen = False
            if self.steps_closed and not self.asm.open_steps:
                stall = job_stalled(self.last_step, self.last_step_ts, self._samples_ts,
                                    self.config)
                if stall is not None:
                    out += self.tracker.update("job_stalled", [stall], None)
        return out

    def close(self, now: float) -> list[Finding]:
        """Close the steps due at ``now`` and run their checks, the witness's and the ranks'."""
        out: list[Finding] = []
        for cs in self.asm.close_due(now):
            out += self.check(cs)
        if self.witness.pending:
            # Evidence does not clear: a mismatch stays blamed until the job is forgotten.
            out += self.tracker.update("witness_mismatch", self.witness.due(now), None)
        return out + self.judge_ranks(now)

    def check(self, cs: ClosedStep) -> list[Finding]:
        """Every per-step check of one closed step, in a fixed order."""
        c, t = self.config, self.tracker
        cols = step_columns(cs.records, cs.ranks if cs.ranks else None)
        scope = _StepScope(cols)
        self.steps_closed += 1
        if cs.last_ts >= self.last_step_ts:
            self.last_step, self.last_step_ts = cs.step, cs.last_ts
        now = cs.decided_ts
        out = t.update("conflicting_report", step_conflicts(cs.step, cs.conflicts, now), None)
        out += t.update("param_divergence", param_divergence(cs, cols), scope, now)
        out += t.update("grad_norm_mismatch", value_mismatch(
            "grad_norm_mismatch", "grad norm", cols.grad_norm, c.grad_norm_rtol, cs, cols), scope,
            now)
        out += t.update("lr_mismatch", value_mismatch(
            "lr_mismatch", "learning rate", cols.lr, c.lr_rtol, cs, cols), scope, now)
        env = self.env.evaluate(cs, cols, cols.env_fingerprint)
        if env and len(self.manifests):
            env = [self.manifests.explain(f, _held(cols, f.ranks)) for f in env]
        out += t.update("code_fingerprint", env, scope, now)
        out += t.update("seed_mismatch",
                        self.seeds.evaluate(cs, cols, cols.seed_fingerprint), scope, now)
        changed, diverged = self.continuity.evaluate(cs, cols)
        if changed and len(self.manifests):
            changed = [self.manifests.explain(f) for f in changed]
        out += t.update("code_changed", changed, scope, now)
        out += t.update("restart_divergence", diverged, scope, now)
        slowed = self.devices.slowed
        loss, grad, slow = self.peers.evaluate(cs, cols, lambda n: slowed(n, cs.last_ts))
        peer_checks: list[tuple[CheckName, list[Fault] | None]] = [
            ("local_grad_outlier", grad), ("loss_outlier", loss), ("straggler", slow)]
        for check, faults in peer_checks:
            # A step without a verdict (too few peers reporting) neither fires nor clears.
            out += t.update(check, faults or [], scope if faults is not None else None, now)
        shifts = self.trajectory.evaluate(cs, cols)
        out += t.update("job_shift", shifts or [], scope if shifts is not None else None, now)
        out += t.update("rank_missing", rank_missing(cs, cols, self.asm, c), scope, now)
        out += t.update("step_skew", step_skew(cs, cols, self.asm, c), scope, now)
        out += t.update("job_stalled", [], _EVERYTHING, now)
        # The world size tells an alert how much of the job a finding blames (job-wide?).
        return [f if "world_size" in f.evidence
                else replace(f, evidence={**f.evidence, "world_size": cs.world_size})
                for f in out]
