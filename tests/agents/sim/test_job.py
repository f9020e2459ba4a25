import pytest

from tests.agents.sim.util import by_ts, checkpoints, replicas_agree, samples, steps
from trainguard.agents.sim import DEFAULT_START_TS, JobSimulator, JobSpec, make_scenario
from trainguard.agents.sim.steps import COMPUTE_S
from trainguard.schemas.records import GpuSampleBatch, Heartbeat, StepBatch

SPEC = JobSpec(nodes=3, gpus_per_node=4, checkpoint_every=50, checkpoint_pause_s=5)


@pytest.fixture(scope="module")
def clean():
    """A clean run of 150 ticks: three checkpoint saves."""
    return JobSimulator(SPEC, seed=1).run(150)


def test_same_seed_gives_identical_records():
    assert JobSimulator(SPEC, seed=4).run(30) == JobSimulator(SPEC, seed=4).run(30)
    assert JobSimulator(SPEC, seed=4).run(30) != JobSimulator(SPEC, seed=5).run(30)


def test_every_node_sends_one_sample_batch_per_tick_keyed_and_tagged_by_job(clean):
    batches = samples(clean)
    assert len(batches) == 150 * 3
    for t in range(150):
        tick = batches[3 * t: 3 * t + 3]
        assert [b.node for b in tick] == ["node-00", "node-01", "node-02"]
        assert {b.ts for b in tick} == {DEFAULT_START_TS + t}
        assert {b.seq for b in tick} == {t}
        assert all(b.job_id == "job-0" and len(b.gpus) == 4 for b in tick)
    assert {e.key for e in clean if e.topic != "heartbeats"} == {b"job-0"}
    assert {e.topic for e in clean if isinstance(e.record, GpuSampleBatch)} == {"samples"}
    assert {e.topic for e in clean
            if not isinstance(e.record, GpuSampleBatch | Heartbeat)} == {"steps"}


def test_every_node_agent_sends_a_heartbeat_every_five_ticks_keyed_and_tagged_by_job(clean):
    beats = [e for e in clean if e.topic == "heartbeats"]
    assert len(beats) == 3 * 150 // 5
    assert {e.key for e in beats} == {b"job-0"}
    assert {e.record.node for e in beats} == {"node-00", "node-01", "node-02"}
    assert {getattr(e.record, "job_id", None) for e in beats} == {"job-0"}
    assert all(isinstance(e.record, Heartbeat) and e.record.backend == "simulated"
               for e in beats)
    last = [e.record for e in beats if e.record.node == "node-01"][-1]
    assert isinstance(last, Heartbeat) and last.counters.batches_sent > 0


def test_step_batches_carry_their_nodes_ranks():
    sim = JobSimulator(SPEC, seed=1)
    for e in sim.tick():
        if isinstance(e.record, StepBatch):
            ranks = [s.rank for s in e.record.steps]
            assert ranks == sim.ranks_of(e.record.node)
            assert all(sim.node_of(r) == e.record.node for r in ranks)


def test_clean_run_keeps_every_cross_rank_invariant(clean):
    fingerprints = set()
    previous_step, previous_checksum = 0, None
    for _, records in sorted(by_ts(clean).items()):
        assert [r.rank for r in records] == list(range(12))
        assert {r.world_size for r in records} == {12}
        assert len({r.step for r in records}) == 1
        assert len({r.grad_norm for r in records}) == 1
        assert len({r.lr for r in records}) == 1
        assert len({r.step_time_s for r in records}) == 1
        assert replicas_agree(records)
        assert len({r.loss for r in records}) > 1
        assert len({r.local_grad_norm for r in records}) > 1
        assert len({r.compute_time_s for r in records}) > 1
        assert records[0].step == previous_step + 1
        assert records[0].param_checksum != previous_checksum
        assert records[0].step_time_s >= max(r.compute_time_s for r in records)
        previous_step, previous_checksum = records[0].step, records[0].param_checksum
        fingerprints |= {(r.env_fingerprint, r.seed_fingerprint) for r in records}
    assert len(fingerprints) == 1


def test_loss_decays_and_lr_warms_up(clean):
    records = steps(clean)
    first = [r for r in records if r.step == 1]
    late = [r for r in records if r.step == 130]
    assert sum(r.loss for r in first) > sum(r.loss for r in late)
    assert first[0].lr < late[0].lr


def test_checkpoint_saves_every_n_steps_then_every_gpu_pauses(clean):
    saves = checkpoints(clean, "save")
    assert {s.checkpoint_id for s in saves} == {"job-0/step-50", "job-0/step-100"}
    assert len(saves) == 2 * 12 and len({(s.checkpoint_id, s.rank) for s in saves}) == 24
    ticks = by_ts(clean)
    at_50 = next(ts for ts, rs in ticks.items() if rs[0].step == 50)
    for k in range(1, 6):
        assert at_50 + k not in ticks
        pause = [b for b in samples(clean) if b.ts == at_50 + k]
        assert all(g.util_gpu_pct < 20 and g.clock_event_reasons == 1
                   for b in pause for g in b.gpus)
    assert ticks[at_50 + 6][0].step == 51
    busy = [g for b in samples(clean) if b.ts == at_50 for g in b.gpus]
    assert all(g.util_gpu_pct > 85 and g.clock_event_reasons == 0 for g in busy)


def test_eval_phases_stop_steps_at_moderate_load():
    spec = JobSpec(nodes=2, gpus_per_node=2, eval_every=20, eval_s=6)
    emits = JobSimulator(spec, seed=2).run(40)
    ticks = by_ts(emits)
    assert len(ticks) == 40 - 6
    at_20 = next(ts for ts, rs in ticks.items() if rs[0].step == 20)
    evals = [g.util_gpu_pct for b in samples(emits)
             if at_20 < b.ts <= at_20 + 6 for g in b.gpus]
    assert all(at_20 + k not in ticks for k in range(1, 7))
    assert 30 < sum(evals) / len(evals) < 80


def test_a_dataloader_stall_slows_one_rank_and_everyone_waits():
    emits = JobSimulator(JobSpec(nodes=2, gpus_per_node=4), seed=3).run(400)
    stalled = [rs for rs in by_ts(emits).values()
               if max(r.compute_time_s for r in rs) > 1.6 * COMPUTE_S]
    assert stalled, "seed 3 has a stall within 400 steps"
    for records in stalled:
        slow = [r for r in records if r.compute_time_s > 1.6 * COMPUTE_S]
        assert len(slow) == 1
        assert all(r.step_time_s > slow[0].compute_time_s for r in records)
    assert len(stalled) < 5


def test_tensor_and_pipeline_replicas_agree_and_differ_between_groups():
    spec = JobSpec(nodes=2, gpus_per_node=4, tp_size=2, pp_size=2)
    records = by_ts(JobSimulator(spec, seed=0).run(5))[DEFAULT_START_TS + 4]
    assert replicas_agree(records)
    assert len({r.param_checksum for r in records}) == 4
    assert {(r.dp_rank, r.tp_rank, r.pp_rank) for r in records} == {
        spec.coords(r) for r in range(8)
    }


def test_node_of_and_ranks_of_map_ranks_to_nodes():
    sim = JobSimulator(SPEC)
    assert sim.node_of(5) == "node-01" and sim.ranks_of("node-02") == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="rank 12 out of range 0..11"):
        sim.node_of(12)
    with pytest.raises(ValueError, match="unknown node 'node-09'"):
        sim.ranks_of("node-09")


def test_tick_counts_elapsed_event_seconds():
    sim = JobSimulator(SPEC, start_ts=1000.0)
    sim.tick()
    sim.tick()
    assert sim.t == 2 and {b.ts for b in samples(sim.tick())} == {1002.0}


def test_scenario_made_for_another_spec_is_rejected():
    scenario = make_scenario("kill", JobSpec(nodes=2, gpus_per_node=2))
    with pytest.raises(ValueError, match="was made for"):
        JobSimulator(SPEC, scenario)


def test_job_stops_after_total_steps():
    emits = JobSimulator(JobSpec(nodes=1, gpus_per_node=2, total_steps=5, warmup_steps=2)).run(8)
    assert max(r.step for r in steps(emits)) == 5
    assert [b.job_id for b in samples(emits)][-2:] == [None, None]


def test_a_scenario_drives_one_simulator_only():
    scenario = make_scenario("code_injection", SPEC)
    JobSimulator(SPEC, scenario)
    with pytest.raises(RuntimeError, match="already drives a simulator"):
        JobSimulator(SPEC, scenario)


def _digest(sim, ticks):
    import hashlib

    from trainguard.schemas.codec import encode

    h = hashlib.sha256()
    for _ in range(ticks):
        for e in sim.tick():
            h.update(e.topic.encode() + e.key + encode(e.record))
    return h.hexdigest()[:16]


@pytest.mark.parametrize(("scenario", "digest"), [
    (None, "b54438344ce9587d"), ("node_slowdown", "ece8daf4e2847ab0"),
    ("poisoned_data", "7a5227517fd45fd5"),
])
def test_the_default_noise_gives_the_records_it_always_gave(scenario, digest):
    # Digests of 1,200 ticks (dataloader stalls and checkpoints included) made before the
    # noise became JobSpec parameters: the defaults must not change a single record.
    spec = JobSpec(nodes=3, gpus_per_node=4)
    made = make_scenario(scenario, spec, seed=2, at=60) if scenario else None
    assert _digest(JobSimulator(spec, made, seed=3), 1200) == digest


def test_bursty_noise_and_data_epochs_change_the_records_only_when_asked():
    noisy = JobSpec(nodes=3, gpus_per_node=4, compute_noise=0.15, burst_p=0.06,
                    epoch_steps=20)
    recs = steps(JobSimulator(noisy, seed=1).run(60))
    assert {r.data_epoch for r in recs} == {0, 1, 2}
    assert len({r.seed_fingerprint for r in recs}) == 3
    assert all(r.data_epoch is None for r in steps(JobSimulator(SPEC, seed=1).run(5)))
