"""conflicting_report from the step socket: a second live process claiming a rank, by pid."""

from __future__ import annotations

from msgspec.structs import replace

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed, first
from trainguard.pipeline.alerts import AlertLifecycle
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import RankClaim, StepBatch


def _claim(rank: int = 3, pid: int = 4242, **kw: object) -> RankClaim:
    fields: dict[str, object] = dict(rank=rank, ts=T0 + 5.5, step=5, pid=pid, uid=1001,
                                     holder_pid=4100, holder_uid=1000, holder_since=T0 + 0.2)
    fields.update(kw)
    return RankClaim(**fields)  # type: ignore[arg-type]


def _claims(job: FakeJob, node: str, *claims: RankClaim) -> StepBatch:
    return StepBatch(cluster=job.cluster, node=node, job_id=job.job_id, ts=T0 + 6, seq=99,
                     agent_id=f"agent-{node}", steps=[], claims=list(claims))


def test_a_refused_claim_is_a_conflicting_report_naming_both_pids_and_uids():
    job, stage = FakeJob(16, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 5)]
    groups.append([_claims(job, "node-00", _claim())])
    groups += [job.step(s) for s in range(5, 10)]
    found = first(feed(stage, groups))
    assert checks(found) == ["conflicting_report"]
    [f] = found
    assert (f.category, f.ranks, f.nodes, f.job_id) == ("integrity", [3], ["node-00"], "job-a")
    assert f.evidence["holder_pid"] == 4100 and f.evidence["holder_uid"] == 1000
    assert f.evidence["claimant_pid"] == 4242 and f.evidence["claimant_uid"] == 1001
    assert "pid 4242 (uid 1001)" in f.summary and "pid 4100 (uid 1000)" in f.summary
    assert f.first_seen == T0 + 0.2 and f.ts == T0 + 5.5
    assert stage.stats()["rank_claims"] == 1
    [alert] = AlertLifecycle().observe_findings([f])
    assert (alert.severity, alert.check) == ("page", "conflicting_report")


def test_each_claimant_is_its_own_finding_and_a_repeat_is_not_a_new_one():
    job, stage = FakeJob(16, noise=False), ConsistencyStage()
    found = first(feed(stage, [job.step(1), [_claims(job, "node-00", _claim(pid=1))],
                               [_claims(job, "node-00", _claim(pid=1), _claim(pid=2))]]))
    assert [f.evidence["claimant_pid"] for f in found] == [1, 2]


def test_claims_survive_the_wire():
    job = FakeJob(16)
    batch = _claims(job, "node-00", _claim())
    assert RecordDecoder(StepBatch).decode(encode(batch)).claims == (_claim(),)


def test_a_step_conflict_between_stamped_records_names_both_processes():
    job, stage = FakeJob(16, noise=False), ConsistencyStage()
    groups = [job.step(s) for s in range(1, 10)]
    real = job.record(9, 10, T0 + 10, pid=500, uid=1000)
    forged = job.record(9, 10, T0 + 10.2, pid=600, uid=1002, param_checksum="forged")
    node0, node1 = job.step(10, skip=[9])
    node1 = replace(node1, steps=[*node1.steps, real])
    groups.append([node0, node1, job._batch("node-01", [forged])])
    found = first(feed(stage, groups))
    [clash] = [f for f in found if f.check == "conflicting_report"]
    assert clash.evidence["first_processes"] == "500:1000"
    assert clash.evidence["second_processes"] == "600:1002"
    assert "pid 500, uid 1000" in clash.summary and "pid 600, uid 1002" in clash.summary
