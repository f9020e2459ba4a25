from msgspec.structs import replace

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


def test_a_ranks_oldest_save_makes_room_once_it_is_older_than_keep_s():
    job, stage = FakeJob(4), ConsistencyStage()
    for i in range(20):  # every 200 s: 16 saves span more than checkpoint_keep_s (1800 s)
        stage.observe(job.checkpoint("save", f"c/{i}", i, T0 + 200 * i))
    saves = stage.jobs["job-a"].checkpoints.saves
    assert sorted(saves) == [0, 1, 2, 3]
    assert all(list(saves[r]) == [f"c/{i}" for i in range(4, 20)] for r in range(4))
    assert stage.stats()["refused_saves"] == 0


def test_saves_beyond_the_cap_within_keep_s_are_refused_and_counted_not_evicting():
    job, stage = FakeJob(4), ConsistencyStage()
    for i in range(20):
        stage.observe(job.checkpoint("save", f"c/{i}", i, T0 + i))
    saves = stage.jobs["job-a"].checkpoints.saves
    assert list(saves[2]) == [f"c/{i}" for i in range(16)]
    assert stage.stats()["refused_saves"] == 4 * 4


def test_forged_saves_with_new_ids_cannot_evict_the_real_save():
    job, stage = FakeJob(4), ConsistencyStage()
    stage.observe(job.checkpoint("save", "ckpt/step-100", 100, T0 + 100))
    for i in range(16):  # a flood of saves under new ids, then the shard is modified
        stage.observe(job.checkpoint("save", f"forged/{i}", 100 + i, T0 + 101 + i))
    found = stage.observe(job.checkpoint("load", "ckpt/step-100", 100, T0 + 300,
                                         {2: "0badc0de0badc0de"}))
    assert [(f.check, f.ranks) for f in found] == [("checkpoint_digest", [2])]
    assert stage.stats()["refused_saves"] == 4


def test_a_second_different_save_of_a_shard_is_a_conflict_and_the_first_save_stays():
    # Rank 3's shard is modified; a save carrying the modified digest is sent from node-07.
    job, stage = FakeJob(16), ConsistencyStage()
    saves = job.checkpoint("save", "c/7", 700, T0 + 700)
    assert stage.observe(saves) == []
    forged = replace(saves[3], node="node-07", digest="0badc0de0badc0de", ts=T0 + 710)
    found = stage.observe([forged])
    assert [(f.check, f.ranks, f.nodes, f.category) for f in found] == [
        ("conflicting_report", [3], ["node-00", "node-07"], "integrity")]
    assert found[0].evidence["checkpoint_id"] == "c/7"
    assert found[0].evidence["fields"] == "digest"
    assert (found[0].expected, found[0].observed) == ("0003beef…", "0badc0de…")
    # The load of the modified shard is still checked against the first save.
    loaded = stage.observe(job.checkpoint("load", "c/7", 700, T0 + 800, {3: "0badc0de0badc0de"}))
    assert [(f.check, f.ranks) for f in loaded] == [("checkpoint_digest", [3])]
    assert stage.stats()["conflicting_saves"] == 1


def test_the_same_save_delivered_again_is_silent():
    job, stage = FakeJob(8), ConsistencyStage()
    saves = job.checkpoint("save", "c/1", 50, T0 + 50)
    assert stage.observe(saves) == [] and stage.observe(saves) == []
    # A retried write reports the same shard later: same digest and step, no conflict.
    assert stage.observe([replace(s, ts=T0 + 55) for s in saves]) == []
    assert stage.stats()["conflicting_saves"] == 0
