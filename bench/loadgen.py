"""A cluster-scale load generator: wire messages of thousands of simulated nodes per second.

:class:`~trainguard.agents.fleet.SimulatedFleet` runs one full node agent per node (130 µs of Python
per node and tick): right for the demo and the tests, far too slow to offer 10,000 nodes
× 2 messages per second. This generator keeps the same readings but pays for them once:
``prototypes`` simulated nodes (the real :class:`SimulatedGpus` and a step model) are
encoded per tick, and every node's message is a prototype's bytes with the node, job and
rank names formatted in (about 2 µs). Node ``i`` follows prototype ``i % prototypes``, so
each GPU still sees a noisy, realistic series of its own kind. A node with an injected
fault gets a private :class:`SimulatedGpus` seeded like its prototype: the same kind of
series (same distribution), departing from it at the fault.

Messages are what agents send: one ``GpuSampleBatch`` per node and tick (keyed by node)
and one ``StepBatch`` per node and tick with its ranks of one job (keyed by job).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from trainguard.agents.collectors import SimulatedGpus
from trainguard.schemas.codec import encode
from trainguard.schemas.records import GpuSampleBatch, StepBatch, StepRecord
from trainguard.schemas.topics import Topics

__all__ = ["FleetLoad"]

_NODE = "NODE@@@@@"
_JOB = "JOB@@@@@"
_RANK0 = 4_000_000_000  # marker ranks: 10 digits no timestamp or reading can contain


def _template(payload: bytes, ranks: int) -> bytes:
    """Turn marker names in an encoded record into ``%``-format fields."""
    fmt = payload.replace(b"%", b"%%").replace(_NODE.encode(), b"%(node)s")
    fmt = fmt.replace(_JOB.encode(), b"%(job)s")
    for k in range(ranks):
        fmt = fmt.replace(b'"rank":%d' % (_RANK0 + k), b'"rank":%%(r%d)d' % k)
    return fmt


def _grad_norm(seed: int, step: int) -> float:
    """The gradient norm of ``step``: all-reduced, so one value on every rank of a job.

    Noisy from step to step like a real one, and the same for every node that reports
    the step (nodes follow different prototypes, so it cannot come from a node's model).
    """
    noise = random.Random(f"grad:{seed}:{step}").gauss(0, 0.05)
    return (1.0 + 0.5 * math.exp(-step / 1000.0)) * (1.0 + noise)


class _StepModel:
    """Loss and timing of one node's ranks, seeded (the grad norm is the job's: ``_grad_norm``)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"steps:{seed}")

    def steps(self, step: int, ts: float, ranks: int, grad: float) -> list[StepRecord]:
        """The node's ``ranks`` records of ``step``; ``grad`` is the job's all-reduced norm."""
        rng = self._rng
        base = 2.0 + 6.0 * math.exp(-step / 2000.0)
        return [
            StepRecord(
                job_id=_JOB, rank=_RANK0 + k, world_size=1, node=_NODE, step=step, ts=ts,
                local_rank=k, gpu_index=k, loss=round(base + rng.gauss(0, 0.05), 5),
                grad_norm=round(grad, 5), lr=3e-4,
                step_time_s=round(0.95 + abs(rng.gauss(0, 0.02)), 4),
                samples_per_s=round(256 / 0.95 + rng.gauss(0, 2), 2),
                tokens_per_s=round(524288 / 0.95 + rng.gauss(0, 4000), 1),
                param_checksum=f"p{step:08d}", env_fingerprint="env-1",
            )
            for k in range(ranks)
        ]


class FleetLoad:
    """Messages of ``nodes`` simulated nodes, ``gpus`` GPUs and ranks each, per tick."""

    def __init__(
        self,
        topics: Topics,
        nodes: int,
        *,
        gpus: int = 8,
        nodes_per_job: int = 64,
        prototypes: int = 32,
        cluster: str = "bench",
        node_prefix: str = "ln",
        seed: int = 0,
        checkpoint_every_s: float = 1e12,
    ) -> None:
        self.topics, self.nodes, self.gpus = topics, nodes, gpus
        self.cluster, self._nodes_per_job = cluster, nodes_per_job
        self._prototypes = min(prototypes, nodes)
        self._seed = seed
        # No checkpoint dips by default: a fleet-wide dip every 600 s is a consistency-check
        # matter (issue #5) and would put a burst of findings into a throughput figure.
        self._checkpoint_every_s = checkpoint_every_s
        self._proto_gpus = [self._sim(p) for p in range(self._prototypes)]
        self._proto_steps = [_StepModel(seed + p) for p in range(self._prototypes)]
        self._faulty: dict[int, SimulatedGpus] = {}
        self.names = [f"{node_prefix}-{i:05d}" for i in range(nodes)]
        self._fields = [self._node_fields(i) for i in range(nodes)]

    def _node_fields(self, i: int) -> dict[bytes, bytes | int]:
        # bytes % mapping looks its %(name)s fields up by bytes keys.
        job, slot = divmod(i, self._nodes_per_job)
        world = min(self._nodes_per_job, self.nodes - job * self._nodes_per_job) * self.gpus
        fields: dict[bytes, bytes | int] = {b"node": self.names[i].encode(),
                                            b"job": f"job-{job:04d}".encode(), b"world": world}
        for k in range(self.gpus):
            fields[b"r%d" % k] = slot * self.gpus + k
        return fields

    def _sim(self, prototype: int) -> SimulatedGpus:
        return SimulatedGpus(_NODE, self.gpus, seed=self._seed + prototype,
                             checkpoint_every_s=self._checkpoint_every_s)

    def inject(self, node_index: int, gpu: int, mode: str = "idle") -> None:
        """Make one GPU of one node misbehave from the next tick on."""
        sim = self._faulty.get(node_index)
        if sim is None:
            sim = self._sim(node_index % self._prototypes)
            self._faulty[node_index] = sim
        sim.inject(gpu, mode)

    def tick(self, seq: int, ts: float) -> Iterator[tuple[str, bytes, bytes]]:
        """``(topic, key, value)`` of every node's messages for event time ``ts``."""
        samples, steps = [], []
        grad = _grad_norm(self._seed, 20_000 + seq)
        for p in range(self._prototypes):
            batch = GpuSampleBatch(cluster=self.cluster, node=_NODE, ts=ts, seq=seq,
                                   agent_id="loadgen", driver_version="sim-550.0",
                                   gpus=self._proto_gpus[p].collect(ts))
            samples.append(_template(encode(batch), 0))
            # Jobs mid-run (step 20,000 on): the steep early decay of loss and grad norm is
            # a trend the per-rank baselines would report as drift in a throughput figure.
            sb = StepBatch(cluster=self.cluster, node=_NODE, job_id=_JOB, ts=ts, seq=seq,
                           agent_id="loadgen",
                           steps=self._proto_steps[p].steps(20_000 + seq, ts, self.gpus, grad))
            steps.append(_template(encode(sb), self.gpus).replace(
                b'"world_size":1', b'"world_size":%(world)d'))
        faulty = {}
        for i, sim in self._faulty.items():
            batch = GpuSampleBatch(cluster=self.cluster, node=_NODE, ts=ts, seq=seq,
                                   agent_id="loadgen", driver_version="sim-550.0",
                                   gpus=sim.collect(ts))
            faulty[i] = _template(encode(batch), 0)
        s_topic, j_topic = self.topics.samples, self.topics.steps
        for i, fields in enumerate(self._fields):
            p = i % self._prototypes
            node, job = fields[b"node"], fields[b"job"]
            assert isinstance(node, bytes) and isinstance(job, bytes)
            yield s_topic, node, faulty.get(i, samples[p]) % fields
            yield j_topic, job, steps[p] % fields
