"""witness_mismatch: trainers' checkpoint digests and code against what the agent hashed."""

import hashlib

from tests.pipeline.consistency.helpers import T0, checks
from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
from trainguard.pipeline.consistency.witness import shard_path
from trainguard.schemas.records import CheckpointEvent, WitnessReport

JOB = "job-w"
PATH = "/ckpt/step-100/rank-3.pt"
GOOD = hashlib.sha256(b"weights").hexdigest()
EVIL = hashlib.sha256(b"poisoned weights").hexdigest()
WAIT = 300.0


def _save(digest: str, ts: float, *, path: str | None = PATH, rank: int = 3,
          checkpoint_id: str = "ckpt/step-100") -> CheckpointEvent:
    return CheckpointEvent(cluster="c1", job_id=JOB, node="node-01", rank=rank, step=100, ts=ts,
                           action="save", checkpoint_id=checkpoint_id, digest=digest, path=path)


def _seen(digest: str, ts: float, *, path: str = PATH, changed_at: float | None = None,
          node: str = "node-01") -> WitnessReport:
    return WitnessReport(cluster="c1", node=node, ts=ts, subject="checkpoint", path=path,
                         digest=digest, size=7, changed_at=ts if changed_at is None else changed_at,
                         job_id=JOB)


def _tree(digest: str, ts: float, changed: list[str], subject: str = "framework") -> WitnessReport:
    return WitnessReport(cluster="c1", node="node-02", ts=ts, subject=subject,
                         path="/venv/site-packages/torch", digest=digest, size=100, files=3,
                         changed_files=changed, changed_count=len(changed), job_id=JOB)


def _run(*batches: list) -> tuple[ConsistencyStage, list]:
    """Feed batches, then let the witness wait run out; every finding emitted."""
    stage = ConsistencyStage(ConsistencyConfig(witness_wait_s=WAIT))
    found = []
    for batch in batches:
        found += stage.observe(batch)
    found += stage.flush(T0 + 10 * WAIT)
    return stage, found


def test_a_save_the_witness_hashed_the_same_raises_nothing():
    stage, found = _run([_seen(GOOD, T0 + 1)], [_save(GOOD, T0 + 2)])
    assert found == []
    assert stage.jobs[JOB].witness.saves_witnessed == 1


def test_a_save_whose_digest_the_file_never_had_names_node_rank_path_and_both_digests():
    _, found = _run([_save(GOOD, T0 + 2)], [_seen(EVIL, T0 + 3)])
    assert checks(found) == ["witness_mismatch"]
    f = found[0]
    assert (f.ranks, f.nodes, f.step, f.category) == ([3], ["node-01"], 100, "integrity")
    assert f.evidence["trainer_digest"] == GOOD and f.evidence["witness_digest"] == EVIL
    assert f.evidence["path"] == PATH and f.evidence["kind"] == "save_not_witnessed"
    assert PATH in f.summary and "rank 3 on node-01" in f.summary


def test_a_file_changed_after_its_witnessed_save_is_a_mismatch():
    _, found = _run([_save(GOOD, T0 + 2), _seen(GOOD, T0 + 3)],
                    [_seen(EVIL, T0 + 900, changed_at=T0 + 899)])
    assert checks(found) == ["witness_mismatch"]
    assert found[0].evidence["kind"] == "changed_after_save"
    assert found[0].observed == GOOD and found[0].expected == EVIL


def test_a_version_written_before_the_save_is_the_file_still_being_written():
    _, found = _run([_seen(EVIL, T0 + 1, changed_at=T0 + 0.5)],
                    [_save(GOOD, T0 + 2), _seen(GOOD, T0 + 3, changed_at=T0 + 1.5)])
    assert found == []


def test_nothing_is_judged_before_the_wait_is_over():
    stage = ConsistencyStage(ConsistencyConfig(witness_wait_s=WAIT))
    assert stage.observe([_save(GOOD, T0 + 2), _seen(EVIL, T0 + 3)]) == []
    assert stage.flush(T0 + WAIT) == []
    assert checks(stage.flush(T0 + WAIT + 3)) == ["witness_mismatch"]


def test_a_save_the_witness_never_saw_is_counted_not_raised():
    stage, found = _run([_save(GOOD, T0 + 2)])
    assert found == []
    assert stage.stats()["unwitnessed_saves"] == 1


def test_a_witnessed_file_no_save_names_is_ignored():
    _, found = _run([_seen(EVIL, T0 + 3, path="/ckpt/notes.txt")])
    assert found == []


def test_a_checkpoint_id_that_is_an_absolute_path_names_the_file():
    ev = _save(GOOD, T0, path=None, checkpoint_id=PATH)
    assert shard_path(ev) == PATH
    assert shard_path(_save(GOOD, T0, path=None)) is None
    _, found = _run([ev], [_seen(EVIL, T0 + 1)])
    assert checks(found) == ["witness_mismatch"]


def test_a_framework_file_changed_during_the_job_is_named():
    base = hashlib.sha256(b"tree-1").hexdigest()
    changed = hashlib.sha256(b"tree-2").hexdigest()
    stage = ConsistencyStage()
    assert stage.observe([_tree(base, T0, [])]) == []
    assert stage.observe([_tree(base, T0 + 300, [])]) == []
    found = stage.observe([_tree(changed, T0 + 600, ["nn/functional.py"])])
    assert checks(found) == ["witness_mismatch"]
    f = found[0]
    assert "nn/functional.py" in f.summary and "framework source" in f.summary
    assert f.nodes == ["node-02"] and f.evidence["changed_files"] == "nn/functional.py"
    assert (f.observed, f.expected) == (changed, base)


def test_a_report_without_a_job_is_not_checked():
    stage = ConsistencyStage()
    report = WitnessReport(cluster="c1", node="n", ts=T0, subject="checkpoint", path=PATH,
                           digest=EVIL)
    assert stage.observe([report]) == [] and stage.jobs == {}


def test_forged_saves_cannot_push_out_the_paths_a_job_remembers():
    stage = ConsistencyStage(ConsistencyConfig(witness_wait_s=WAIT, max_witness_paths=2))
    stage.observe([_save(GOOD, T0 + 1, path="/ckpt/a"), _save(GOOD, T0 + 2, path="/ckpt/b")])
    stage.observe([_save(EVIL, T0 + 3, path=f"/ckpt/forged-{i}") for i in range(5)])
    assert stage.stats()["witness_refused"] == 5
    found = stage.observe([_seen(EVIL, T0 + 4, path="/ckpt/a")])
    found += stage.flush(T0 + 10 * WAIT)
    assert checks(found) == ["witness_mismatch"]
