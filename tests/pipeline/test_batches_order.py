"""A catch-up batch shows the consistency stage each job's records in event-time order."""

from __future__ import annotations

from trainguard.agents.sim import JobSpec
from trainguard.agents.sim.availability import Kill
from trainguard.agents.sim.job import JobSimulator
from trainguard.pipeline.batches import _by_job
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.records import Finding, GpuSampleBatch, Record, StepBatch, StepRecord

T0 = 1_700_000_000.0


def _samples(node: str, ts: float) -> GpuSampleBatch:
    return GpuSampleBatch(cluster="c", node=node, ts=ts, seq=int(ts - T0), agent_id="a",
                          job_id="job-a", gpus=[])


def _steps(node: str, ts: float) -> StepBatch:
    return StepBatch(cluster="c", node=node, job_id="job-a", ts=ts, seq=int(ts - T0),
                     agent_id="a", steps=[StepRecord(job_id="job-a", rank=0, world_size=1,
                                                     node=node, step=int(ts - T0), ts=ts)])


def test_each_partitions_run_keeps_its_order_and_the_runs_merge_by_time() -> None:
    # getmany's order: the samples partition's records, then the steps partition's.
    records: list[Record] = [_samples("n1", T0), _samples("n1", T0 + 2), _samples("n1", T0 + 1),
                             _steps("n1", T0), _steps("n1", T0 + 1), _steps("n1", T0 + 2)]
    sources = ["samples:0"] * 3 + ["steps:0"] * 3
    assert _by_job(records) == {"job-a": [0, 1, 2, 3, 4, 5]}
    # T0 + 2 stays before T0 + 1 within its own run: a record's time never reorders its run.
    assert _by_job(records, sources) == {"job-a": [0, 3, 4, 1, 2, 5]}


def test_one_partition_is_left_as_it_came() -> None:
    records: list[Record] = [_samples("n1", T0 + 1), _steps("n1", T0)]
    assert _by_job(records, ["p:0", "p:0"]) == {"job-a": [0, 1]}


def _backlog() -> tuple[list[Record], list[str]]:
    """A killed rank's ticks as a worker catching up reads them: samples, then steps."""
    spec = JobSpec(job_id="job-a", cluster="c", nodes=4, gpus_per_node=4, node_prefix="n")
    scenario = Kill(spec=spec, seed=1, at=30, node=2, ranks=1, peers_continue_s=None)
    sim = JobSimulator(spec, scenario, seed=1, start_ts=T0)
    emits = [e for _ in range(40) for e in sim.tick() if e.topic != "heartbeats"]
    ordered = sorted(emits, key=lambda e: e.topic)  # partition by partition, as getmany
    return [e.record for e in ordered], [f"{e.topic}:0" for e in ordered]


def _node_idle(records: list[Record], sources: list[str] | None) -> list[Finding]:
    stage = ConsistencyStage()
    out: list[Finding] = []
    for idx in _by_job(records, sources).values():
        out += stage.observe([records[i] for i in idx])
    out += stage.flush()
    return [f for f in out if f.check == "node_idle"]


def test_a_released_gpu_in_a_catch_up_batch_names_the_rank_that_ran_on_it() -> None:
    records, sources = _backlog()
    [finding] = _node_idle(records, sources)
    assert list(finding.nodes) == ["n-02"] and list(finding.ranks) == [8]
    # Partition by partition, the stage judged the GPU before any step said who ran there.
    assert [list(f.ranks) for f in _node_idle(records, None)] == [[]]
