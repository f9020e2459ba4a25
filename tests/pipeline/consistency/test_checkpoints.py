from tests.pipeline.consistency.helpers import T0, FakeJob, checks
from trainguard.pipeline.consistency import ConsistencyStage


def test_a_shard_loaded_with_another_digest_than_saved_is_blamed_with_its_node():
    job, stage = FakeJob(16), ConsistencyStage()
    assert stage.observe(job.checkpoint("save", "ckpt/step-100", 100, T0 + 100)) == []
    found = stage.observe(job.checkpoint("load", "ckpt/step-100", 100, T0 + 200,
                                         {11: "0badc0de0badc0de"}))
    assert checks(found) == ["checkpoint_digest"]
    f = found[0]
    assert (f.ranks, f.nodes, f.step, f.category) == ([11], ["node-01"], 100, "integrity")
    assert f.observed == "0badc0de0badc0de" and "ckpt/step-100" in f.summary
    assert stage.stats()["loads_checked"] == 16


def test_loads_that_match_their_saves_raise_nothing():
    job, stage = FakeJob(16), ConsistencyStage()
    stage.observe(job.checkpoint("save", "ckpt/step-100", 100, T0 + 100))
    assert stage.observe(job.checkpoint("load", "ckpt/step-100", 100, T0 + 200)) == []


def test_a_load_whose_save_was_never_seen_is_only_counted():
    job, stage = FakeJob(16), ConsistencyStage()
    assert stage.observe(job.checkpoint("load", "ckpt/step-7", 7, T0, {0: "ffff0000ffff0000"})
                         ) == []
    assert stage.stats()["unknown_loads"] == 16


def test_several_modified_shards_of_one_checkpoint_are_one_finding():
    job, stage = FakeJob(16), ConsistencyStage()
    stage.observe(job.checkpoint("save", "c/1", 50, T0 + 50))
    found = stage.observe(job.checkpoint("load", "c/1", 50, T0 + 90,
                                         {r: "1234abcd1234abcd" for r in (2, 9, 10)}))
    assert [(f.check, f.ranks, f.nodes) for f in found] == [
        ("checkpoint_digest", [2, 9, 10], ["node-00", "node-01"])]


def test_the_same_modified_shard_loaded_again_is_not_reported_again():
    job, stage = FakeJob(8), ConsistencyStage()
    stage.observe(job.checkpoint("save", "c/1", 50, T0 + 50))
    bad = {4: "1234abcd1234abcd"}
    first = stage.observe(job.checkpoint("load", "c/1", 50, T0 + 90, bad))
    soon = stage.observe(job.checkpoint("load", "c/1", 50, T0 + 120, bad))
    later = stage.observe(job.checkpoint("load", "c/1", 50, T0 + 190, bad))
    assert len(first) == 1 and soon == []
    # Past repeat_s it is re-emitted as the same finding, not a new one.
    assert [f.finding_id for f in later] == [first[0].finding_id]


def test_saves_are_remembered_for_the_last_checkpoints_only():
    job, stage = FakeJob(4), ConsistencyStage()
    for i in range(20):
        stage.observe(job.checkpoint("save", f"c/{i}", i, T0 + i))
    assert list(stage.jobs["job-a"].checkpoints.saves) == [f"c/{i}" for i in range(4, 20)]
