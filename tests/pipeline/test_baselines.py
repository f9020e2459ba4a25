import numpy as np
import pytest

from trainguard.agents.collectors import SimulatedGpus
from trainguard.pipeline.baselines import BaselineConfig, BaselineStage
from trainguard.schemas.records import GpuSampleBatch, StepBatch, StepRecord

T0 = 1_795_000_230.0  # just after a simulated checkpoint pause


def _tick(gpus, ts, node="n1"):
    return GpuSampleBatch(cluster="c", node=node, ts=ts, seq=int(ts), agent_id="a",
                          gpus=gpus.collect(ts))


def test_a_gpu_whose_utilization_collapses_is_reported_with_its_identity():
    gpus, stage = SimulatedGpus("n1", 4, seed=3), BaselineStage()
    found = []
    for i in range(150):
        if i == 100:
            gpus.inject(2, "idle")
        found += stage.observe([_tick(gpus, T0 + i)])
    util = [a for a in found if a.metric == "util_gpu_pct"]
    assert {a.entity for a in found} == {"n1/2"}
    assert len(util) == 1
    a = util[0]
    assert (a.node, a.gpu_index, a.entity_kind, a.cluster) == ("n1", 2, "gpu", "c")
    assert T0 + 100 <= a.first_seen <= a.ts <= T0 + 110
    assert a.value < 20 < a.baseline


def test_a_rank_whose_loss_shifts_is_reported_and_its_peers_are_not():
    rng = np.random.default_rng(1)
    stage, found = BaselineStage(), []
    for i in range(150):
        shift = [0.3 if r == 1 and i >= 90 else 0.0 for r in range(4)]
        steps = [StepRecord(job_id="j", rank=r, world_size=4, node="n", step=i, ts=T0 + i,
                            loss=float(2.0 + rng.normal(0, 0.01) + shift[r]))
                 for r in range(4)]
        found += stage.observe([StepBatch(cluster="c", node="n", job_id="j", ts=T0 + i, seq=i,
                                          agent_id="a", steps=steps)])
    assert [(a.entity, a.metric) for a in found] == [("j/1", "loss")]
    assert (found[0].job_id, found[0].rank) == ("j", 1)


def test_snapshots_hold_one_row_per_entity_and_metric_once_due():
    gpus, stage = SimulatedGpus("n1", 2), BaselineStage(BaselineConfig(snapshot_every_s=30))
    due = []
    for i in range(70):
        stage.observe([_tick(gpus, T0 + i)])
        due.append(stage.snapshot_due())
        if due[-1]:
            rows = stage.snapshot_rows()
    assert sum(due) == 2
    assert {(r["entity"], r["metric"]) for r in rows} == {
        (f"n1/{g}", m) for g in range(2) for m in ("util_gpu_pct", "power_w")}
    assert all(r["samples"] > 0 and not r["in_alarm"] for r in rows)


def _snapshot_as_dicts(stage):
    """The ``baselines`` rows as the dict-building snapshot made them (frozen reference)."""
    rows = []
    for family in (stage.gpus, stage.ranks):
        live = family.live_rows()
        if len(live) == 0:
            continue
        keys = family.registry.keys_of(live)
        for metric, bank in family.banks.items():
            bank.grow(family.registry.n_rows)
            mean, scale, n = bank.baseline(live)
            alarm = bank.rows.alarm[live] != 0
            for key, mu, sc, cnt, al in zip(keys, mean, scale, n, alarm, strict=True):
                if cnt == 0 or not np.isfinite(mu):
                    continue
                rows.append({
                    "cluster": family.meta[key].cluster if key in family.meta else "",
                    "entity_kind": family.kind, "entity": key, "metric": metric,
                    "ts": stage.now, "mean": float(mu), "scale": float(sc),
                    "samples": int(cnt), "in_alarm": bool(al)})
    return rows


def test_snapshot_columns_hold_what_the_row_dicts_held_with_alarms_and_warming_rows():
    gpus, stage = SimulatedGpus("n1", 4, seed=5), BaselineStage()
    late = SimulatedGpus("n2", 2, seed=6)
    for i in range(80):
        if i == 60:
            gpus.inject(1, "idle")  # in alarm at the snapshot
        batch = [_tick(gpus, T0 + i)] + ([_tick(late, T0 + i, node="n2")] if i >= 75 else [])
        stage.observe(batch + [StepBatch(
            cluster="c", node="n1", job_id="j", ts=T0 + i, seq=i, agent_id="a",
            steps=[StepRecord(job_id="j", rank=r, world_size=2, node="n1", step=i,
                              ts=T0 + i, loss=2.0 + 0.01 * ((i * 7 + r) % 5))
                   for r in range(2)])])
    want = _snapshot_as_dicts(stage)
    got = stage.snapshot_rows()
    assert list(got) == want and len(want) > 10
    assert any(r["in_alarm"] for r in want) and any(r["samples"] < 30 for r in want)
    assert {r["entity_kind"] for r in want} == {"gpu", "rank"}


def test_silent_entities_are_expired_and_forgotten():
    stage = BaselineStage(BaselineConfig(idle_s=60))
    stage.observe([_tick(SimulatedGpus("gone", 1), T0, node="gone")])
    live = SimulatedGpus("live", 1)
    for i in range(1, 400, 10):
        stage.observe([_tick(live, T0 + i, node="live")])
    assert set(stage.gpus.meta) == {"live/0"}
    assert stage.expired == 1


def test_exported_state_resumes_in_another_stage_without_warm_up():
    gpus = SimulatedGpus("n1", 2, seed=5)
    first = BaselineStage()
    for i in range(60):
        first.observe([_tick(gpus, T0 + i)], sources=["s:0"])
    blob = first.export("s:0")
    second = BaselineStage()
    assert second.load("s:0", blob) == 2
    assert second.partitions() == {"s:0"}
    gpus.inject(1, "idle")
    found = []
    for i in range(60, 70):  # a cold stage would still be warming up here (30 samples)
        found += second.observe([_tick(gpus, T0 + i)], sources=["s:0"])
    assert {a.entity for a in found} == {"n1/1"}
    assert min(a.ts for a in found) <= T0 + 65


def test_a_snapshot_packs_the_state_of_when_it_was_taken_not_of_when_it_is_packed():
    gpus = SimulatedGpus("n1", 2, seed=5)
    stage = BaselineStage()
    for i in range(40):
        stage.observe([_job_tick(gpus, T0 + i, "j1")], sources=["s:0"])
    now = stage.export("s:0")
    later = stage.export_later("s:0")  # copied here; packed below, as on the thread
    for i in range(40, 50):  # batches go on meanwhile: new points, the GPUs change job
        stage.observe([_job_tick(gpus, T0 + i, "j2")], sources=["s:0"])
    assert later() == now
    assert stage.export("s:0") != now
    restored = BaselineStage()
    assert restored.load("s:0", later()) == 2
    assert {m.job_id for m in restored.gpus.meta.values()} == {"j1"}
    assert {m.job_id for m in stage.gpus.meta.values()} == {"j2"}


def test_dropping_a_partition_forgets_only_its_entities():
    stage = BaselineStage()
    stage.observe([_tick(SimulatedGpus("a", 1), T0, node="a")], sources=["s:0"])
    stage.observe([_tick(SimulatedGpus("b", 1), T0, node="b")], sources=["s:1"])
    assert stage.drop("s:0") == 1
    assert set(stage.gpus.meta) == {"b/0"} and stage.partitions() == {"s:1"}


def test_an_unreported_metric_is_skipped_not_a_crash_and_the_others_still_learn():
    from trainguard.schemas.records import GpuSample

    stage, found = BaselineStage(), []
    for i in range(120):
        util = 95.0 + (i % 3) if i < 100 else 2.0
        power = None if i % 2 else 600.0 + (i % 5)  # every other tick without power
        found += stage.observe([GpuSampleBatch(
            cluster="c", node="n1", ts=T0 + i, seq=i, agent_id="a",
            gpus=[GpuSample(index=0, util_gpu_pct=util, power_w=power)])])
    assert [a.metric for a in found] == ["util_gpu_pct"]
    assert found[0].entity == "n1/0" and found[0].first_seen >= T0 + 100


def _ranks(ranks, ts, job="j"):
    steps = [StepRecord(job_id=job, rank=r, world_size=1 << 20, node="n", step=int(ts - T0),
                        ts=ts, loss=2.0) for r in ranks]
    return StepBatch(cluster="c", node="n", job_id=job, ts=ts, seq=0, agent_id="a", steps=steps)


def test_past_max_entities_the_least_recently_seen_are_evicted_and_counted():
    stage = BaselineStage(BaselineConfig(max_entities=4))
    stage.observe([_ranks([0, 1, 2, 3], T0)])
    stage.observe([_ranks([0, 1], T0 + 1)])
    stage.observe([_ranks([4, 5], T0 + 2)])
    assert sorted(stage.ranks.meta) == ["j/0", "j/1", "j/4", "j/5"]
    assert len(stage.ranks.registry) == 4 and stage.evicted == 2
    assert stage.ranks.registry.get("j/2") is None


def test_a_batch_of_known_entities_past_half_the_cap_looks_for_no_room(monkeypatch):
    stage = BaselineStage(BaselineConfig(max_entities=6))
    stage.observe([_ranks([0, 1, 2, 3], T0)])
    looked = []
    monkeypatch.setattr(stage.ranks, "make_room", looked.append)
    # 4 held + 4 points is past the cap of 6, but none of the points is new.
    stage.observe([_ranks([0, 1, 2, 3], T0 + 1)])
    assert looked == []
    stage.observe([_ranks([0, 1, 2, 3, 4, 5, 6], T0 + 2)])  # 3 new: 7 would be past it
    assert looked and {"j/4", "j/5", "j/6"} <= set(looked[0])


def test_forged_ranks_cannot_grow_the_baselines_past_the_cap():
    stage = BaselineStage(BaselineConfig(max_entities=64))
    for i in range(50):
        stage.observe([_ranks(range(i * 100, i * 100 + 100), T0 + i, job=f"forged-{i}")])
    assert len(stage.ranks.registry) <= 100 and stage.ranks.registry.n_rows <= 164
    bank = next(iter(stage.ranks.banks.values()))
    assert bank.capacity <= 1024  # rows are reused, not grown per forged rank
    assert stage.evicted == 50 * 100 - 100
    assert stage.snapshot_rows() == [] or all(r["entity"].startswith("forged-49/")
                                              for r in stage.snapshot_rows())


def _job_tick(gpus, ts, job):
    return GpuSampleBatch(cluster="c", node="n1", ts=ts, seq=int(ts), agent_id="a",
                          gpus=gpus.collect(ts), job_id=job)


@pytest.mark.parametrize("job", [None, "j"])
def test_a_checkpoint_pause_shared_by_the_job_s_gpus_is_no_anomaly(job):
    gpus, stage, found = SimulatedGpus("n1", 8, seed=5), BaselineStage(), []
    for i in range(700):  # a 20 s checkpoint pause at i = 570
        found += stage.observe([_job_tick(gpus, T0 + i, job)])
    if job is None:  # nobody to compare with: each GPU's dip is its own
        assert {a.entity for a in found} == {f"n1/{g}" for g in range(8)}
    else:
        assert found == [] and stage.suppressed()["shared"] >= 8


def test_a_gpu_anomaly_names_the_job_its_batch_named():
    gpus, stage, found = SimulatedGpus("n1", 4, seed=3), BaselineStage(), []
    for i in range(150):
        if i == 100:
            gpus.inject(2, "idle")
        found += stage.observe([_job_tick(gpus, T0 + i, "j")])
    assert {(a.entity, a.job_id) for a in found} == {("n1/2", "j")}


def test_a_whole_job_s_loss_rising_together_is_left_to_the_job_checks():
    rng = np.random.default_rng(2)
    stage, found = BaselineStage(), []
    for i in range(200):
        steps = [StepRecord(job_id="j", rank=r, world_size=4, node="n", step=i, ts=T0 + i,
                            loss=float(2.0 + rng.normal(0, 0.01) + (0.4 if i >= 120 else 0)))
                 for r in range(4)]
        found += stage.observe([StepBatch(cluster="c", node="n", job_id="j", ts=T0 + i, seq=i,
                                          agent_id="a", steps=steps)])
    assert found == [] and stage.suppressed()["shared"] >= 4


def test_state_of_another_detector_layout_warms_up_instead_of_failing():
    gpus, first = SimulatedGpus("n1", 2), BaselineStage()
    for i in range(40):
        first.observe([_tick(gpus, T0 + i)], sources=["s:0"])
    blob = first.export("s:0")
    from trainguard.pipeline.baseline_state import read_doc
    from trainguard.pipeline.state import encode_arrays

    doc = read_doc(blob, 1 << 30)
    doc["format"] = 1  # as an older worker wrote it: uncompressed, nothing folded
    doc["gpu"]["banks"]["power_w"] = {k: v for k, v in doc["gpu"]["banks"]["power_w"].items()
                                      if not k.startswith("anchor.")}  # an older layout
    second = BaselineStage()
    assert second.load("s:0", encode_arrays(doc)) == 0
    assert second.partitions() == set() and len(second.gpus.registry) == 0
