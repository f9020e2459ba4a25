"""conflicting_report: a second, different record of a step is evidence, never an overwrite."""

import random

import pytest

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed, first
from trainguard.agents.sim import JobSimulator, JobSpec, make_scenario
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.consistency.conflicts import differing_fields, shown
from trainguard.schemas.records import StepBatch


def _forged(job: FakeJob, rank: int, step: int, sender: str, **over: object) -> StepBatch:
    """A copy of ``rank``'s record for ``step`` sent by ``sender``'s agent, values changed."""
    return job._batch(sender, [job.record(rank, step, T0 + step + 0.2, **over)])


def test_a_forged_clean_copy_of_the_culprits_record_cannot_hide_param_divergence():
    # Rank 5 (node-00) diverges from step 30; from node-01 someone sends a clean copy of
    # each of its records right after the real one.
    job, stage = FakeJob(16, noise=False), ConsistencyStage()
    groups = []
    for s in range(1, 60):
        if s < 30:
            groups.append(job.step(s))
            continue
        # The copy lands between node-00's batch and node-01's, while the step is open.
        node0, node1 = job.step(s, over={5: {"param_checksum": f"bad-{s}"}})
        groups.append([node0, _forged(job, 5, s, "node-01", param_checksum=f"params-{s:06d}"),
                       node1])
    found = first(feed(stage, groups))
    assert checks(found) == ["conflicting_report", "param_divergence"]
    clash, divergence = found
    assert (divergence.ranks, divergence.step) == ([5], 30)
    assert (clash.ranks, clash.nodes, clash.step, clash.category) == (
        [5], ["node-00", "node-01"], 30, "integrity")
    assert clash.evidence["first_sources"] == "node-00"
    assert clash.evidence["second_sources"] == "node-01"
    # The copy differs in its checksum and in its time: both fields are named.
    assert clash.evidence["fields"] == "ts,param_checksum"
    assert "node-00" in clash.summary and "node-01" in clash.summary
    assert stage.stats()["conflicting_records"] == 59 - 29


def test_the_first_record_stays_when_a_later_copy_would_raise_a_finding():
    job, stage = FakeJob(16, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 40)]
    node0, node1 = job.step(40)  # rank 9 is on node-01; its copy comes from node-00
    groups.append([node1, _forged(job, 9, 40, "node-00", param_checksum="forged"), node0])
    found = first(feed(stage, groups))
    assert checks(found) == ["conflicting_report"]
    clash = found[0]
    assert clash.ranks == [9] and clash.nodes == ["node-00", "node-01"]
    assert (clash.expected, clash.observed) == ("params-0…", "forged")
    assert clash.evidence["first_sources"] == "node-01"


def test_an_identical_copy_is_at_least_once_delivery_and_silent():
    job, stage = FakeJob(16, seed=2), ConsistencyStage()
    groups = []
    for s in range(1, 60):
        batches = job.step(s)
        groups += [batches, batches[:1]]  # one node's batch delivered twice
    assert feed(stage, groups) == []
    assert stage.stats()["conflicting_records"] == 0


def test_conflicts_of_several_ranks_in_one_step_are_one_finding():
    job, stage = FakeJob(16, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 29)]
    forged = [job.record(r, 29, T0 + 29.5, loss=9.0) for r in (1, 2, 3)]
    node0, node1 = job.step(29)
    groups.append([node0, job._batch("node-09", forged), node1])
    found = first(feed(stage, groups))
    assert [(f.check, f.ranks, f.nodes) for f in found] == [
        ("conflicting_report", [1, 2, 3], ["node-00", "node-09"])]
    assert found[0].evidence["conflicts"] == 3


def test_a_rerun_of_steps_after_a_restart_is_not_a_conflict():
    # Rank 7 never reports step 50, so the step waits; every rank loads the checkpoint of
    # step 45 and re-runs 46..60 within the step's wait, with other values.
    job, stage = FakeJob(8, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 50)]
    groups.append(job.step(50, skip={7}))
    groups.append(job.checkpoint("save", "ckpt/45", 45, T0 + 45.5))
    groups.append(job.checkpoint("load", "ckpt/45", 45, T0 + 50.5))
    groups += [job.step(s, T0 + 50.6 + 0.1 * (s - 46), over={r: {"loss": 1.5} for r in range(8)})
               for s in range(46, 61)]
    found = feed(stage, groups)
    assert "conflicting_report" not in checks(found)
    assert stage.stats()["conflicting_records"] == 0 and stage.stats()["restarts"] == 1


def test_steps_going_back_without_a_load_are_not_conflicts_either():
    job, stage = FakeJob(8, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 60)]
    groups += [job.step(s, T0 + 60 + 0.2 * s) for s in range(55, 80)]
    assert feed(stage, groups) == []
    assert stage.stats()["conflicting_records"] == 0


def test_differing_fields_names_every_field_that_differs_in_field_order():
    job = FakeJob(8, noise=False)
    a = job.record(3, 10, T0)
    b = job.record(3, 10, T0, lr=1.0, node="node-07")
    assert differing_fields(a, b) == ("node", "lr")
    assert differing_fields(a, job.record(3, 10, T0)) == ()


def test_values_are_shortened_for_a_sentence():
    assert shown("0123456789abcdef") == "01234567…"
    assert shown(0.000300000001) == "0.0003"
    assert shown(None) == "none" and shown(12) == "12"


@pytest.mark.parametrize("name", ["clean_restart", "job_resize", "checkpoint_corruption",
                                  "checkpoint_pause", "weight_tamper"])
def test_no_simulated_scenario_reports_a_conflict_even_when_delivered_twice(name):
    # Restarts re-run steps and re-save checkpoints; at-least-once delivery repeats a fifth
    # of each tick's messages a tick later, in shuffled order.
    spec = JobSpec(nodes=3, gpus_per_node=4)
    sim = JobSimulator(spec, make_scenario(name, spec, 1))
    stage, rng = ConsistencyStage(), random.Random(1)
    found, previous = [], []
    for _ in range(300):
        records = [e.record for e in sim.tick()]
        batch = records + [r for r in previous if rng.random() < 0.2]
        rng.shuffle(batch)
        found += stage.observe(batch)
        previous = records
    found += stage.flush(stage.watermark + 10)
    stats = stage.stats()
    assert "conflicting_report" not in checks(found)
    assert stats["conflicting_records"] == stats["conflicting_saves"] == 0
    assert stats["steps_closed"] > 200
