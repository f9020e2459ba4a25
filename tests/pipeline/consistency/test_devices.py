from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed, first
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.records import XidEvent


def _ticks(job, n, over_at=lambda t: None, util_at=lambda t: 95.0, steps=True):
    """Steps and GPU samples of ``n`` ticks; ``over_at(t)`` changes GPUs at tick t."""
    return [(job.step(t) if steps else []) + job.samples(T0 + t + 0.5, util=util_at(t),
                                                         over=over_at(t))
            for t in range(1, n + 1)]


def test_a_node_far_below_its_peers_utilization_is_idle():
    job = FakeJob(32, seed=1)
    idle = {("node-02", g): {"util_gpu_pct": 4.0} for g in range(8)}
    found = feed(ConsistencyStage(), _ticks(job, 40, lambda t: idle if t >= 20 else None,
                                            steps=False))
    assert checks(found) == ["node_idle"]
    f = first(found)[0]
    assert (f.nodes, f.gpu_index, f.category) == (["node-02"], None, "availability")
    assert f.first_seen == T0 + 24.5  # the 5th idle sample in a row
    assert f.observed == 4.0 and f.expected == 95.0


def test_every_node_dipping_together_is_not_idle():
    job = FakeJob(32, seed=2)
    found = feed(ConsistencyStage(),
                 _ticks(job, 60, util_at=lambda t: 3.0 if 20 <= t < 35 else 95.0, steps=False))
    assert found == []


def test_one_idle_gpu_is_blamed_with_its_index_and_rank():
    job = FakeJob(32, seed=3)
    found = feed(ConsistencyStage(), _ticks(
        job, 40, lambda t: {("node-01", 6): {"util_gpu_pct": 0.0}} if t >= 10 else None))
    assert checks(found) == ["node_idle"]
    f = first(found)[0]
    assert (f.nodes, f.gpu_index, f.ranks) == (["node-01"], 6, [14])
    assert "GPU 6 of node-01 (rank 14)" in f.summary


def test_a_node_with_a_lost_gpu_idles_for_hardware_reasons():
    job = FakeJob(32, seed=4)
    lost = {("node-03", g): {"util_gpu_pct": 1.0} for g in range(8)}
    lost[("node-03", 2)] = {"lost": True, "util_gpu_pct": None,
                            "xid_events": [XidEvent(xid=79, ts=T0 + 20)]}
    found = feed(ConsistencyStage(), _ticks(job, 40, lambda t: lost if t >= 20 else None,
                                            steps=False))
    assert [(f.check, f.category, f.nodes) for f in first(found)] == [
        ("node_idle", "hardware", ["node-03"])]


def test_a_gpu_with_thermal_slowdown_bits_for_five_samples_is_throttled():
    job = FakeJob(16, seed=5)
    hot = {("node-01", 3): {"clock_event_reasons": 0x40 | 0x1, "sm_clock_mhz": 1100,
                            "temp_c": 93.0}}
    found = feed(ConsistencyStage(), _ticks(job, 30, lambda t: hot if t >= 10 else None,
                                            steps=False))
    assert checks(found) == ["gpu_throttled"]
    f = first(found)[0]
    assert (f.nodes, f.gpu_index, f.category, f.first_seen) == (["node-01"], 3, "hardware",
                                                                T0 + 14.5)
    assert "HW thermal" in f.summary


def test_power_capping_and_short_thermal_blips_are_not_throttling():
    job = FakeJob(16, seed=6)

    def over(t):
        if t % 10 < 4:  # four samples of thermal slowdown, then one clean
            return {("node-00", 1): {"clock_event_reasons": 0x20}}
        return {("node-00", 2): {"clock_event_reasons": 0x4}}

    assert feed(ConsistencyStage(), _ticks(job, 60, over, steps=False)) == []


def test_sample_batches_without_a_job_are_ignored():
    job, stage = FakeJob(16, seed=7), ConsistencyStage()
    idle = job.samples(T0, util=0.0)
    batches = [b.__class__(**{**{f: getattr(b, f) for f in b.__struct_fields__},
                              "job_id": None}) for b in idle]
    assert stage.observe(batches) == [] and stage.jobs == {}


# -- the fast path: a GPU whose process exited is judged on its first sample ----------------

def _procs(job, gone_at, gone):
    """``over`` for every GPU: one compute process, none on ``gone`` GPUs from tick gone_at."""
    def over(t):
        return {(n, g): {"compute_procs": 0 if t >= gone_at and ((n, g) in gone or n in gone)
                         else 1, **({"util_gpu_pct": 0.0} if t >= gone_at and (
                             (n, g) in gone or n in gone) else {})}
                for n in job.nodes for g in range(job.gpus)}
    return over


def test_a_killed_node_is_idle_on_its_first_sample():
    job = FakeJob(32, seed=5)
    found = feed(ConsistencyStage(), _ticks(job, 30, _procs(job, 20, {"node-02"}), steps=False))
    f = first(found)[0]
    assert (f.check, f.nodes, f.gpu_index, f.category) == (
        "node_idle", ["node-02"], None, "availability")
    assert f.first_seen == T0 + 20.5  # the first sample without a process, not the 5th
    assert "training process exited" in f.summary and f.evidence["samples"] == 1


def test_one_gpu_whose_process_exited_is_blamed_on_its_first_sample():
    job = FakeJob(32, seed=6)
    found = feed(ConsistencyStage(), _ticks(job, 30, _procs(job, 12, {("node-01", 3)})))
    idle = [f for f in first(found) if f.check == "node_idle"]
    assert [(f.nodes, f.gpu_index, f.ranks, f.first_seen) for f in idle] == [
        (["node-01"], 3, [11], T0 + 12.5)]


def test_a_whole_job_stopping_is_not_blamed_on_the_node_that_reported_first():
    job = FakeJob(32, seed=7)
    everyone = set(job.nodes)
    found = feed(ConsistencyStage(), _ticks(job, 40, _procs(job, 20, everyone), steps=False))
    assert [f for f in found if f.check == "node_idle"] == []


def test_a_release_waits_for_its_peers_samples_of_the_same_tick():
    job = FakeJob(32, seed=8)
    over = _procs(job, 20, {"node-00"})
    groups = []
    for t in range(1, 31):
        batches = job.samples(T0 + t + 0.5, over=over(t))
        groups += [batches[:1], batches[1:]]  # node-00 reports first, its peers after
    stage = ConsistencyStage()
    found = []
    for i, group in enumerate(groups):
        got = stage.observe(group)
        if i == 2 * 19:  # node-00's first sample without processes: held, not judged yet
            assert got == []
        found += got
    f = first(found)[0]
    assert (f.nodes, f.first_seen, f.evidence["samples"]) == (["node-00"], T0 + 20.5, 1)


def test_a_release_sampled_last_in_a_batch_is_decided_with_that_batch():
    job = FakeJob(32, seed=9)
    last = job.nodes[-1]
    over = _procs(job, 20, {last})
    stage = ConsistencyStage()
    for t in range(1, 20):
        assert stage.observe(job.samples(T0 + t + 0.5, over=over(t))) == []
    found = stage.observe(job.samples(T0 + 20.5, over=over(20)))  # the dead node comes last
    assert [(f.check, f.nodes) for f in found] == [("node_idle", [last])]
