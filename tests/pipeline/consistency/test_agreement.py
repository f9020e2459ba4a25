from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed
from trainguard.pipeline.consistency import ConsistencyStage


def _run(job, steps, over_from=None, over=None, **kw):
    stage = ConsistencyStage(**kw)
    batches = []
    for s in range(1, steps + 1):
        batches.append(job.step(s, over=over if over_from is not None and s >= over_from else None))
    return stage, feed(stage, batches)


def test_a_replica_whose_param_checksum_departs_is_blamed_once_with_its_node():
    job = FakeJob(16, noise=False)
    _, found = _run(job, 40, over_from=10, over={5: {"param_checksum": "9f3a77aa00112233"}})
    assert checks(found) == ["param_divergence"]
    f = found[0]
    assert (f.ranks, f.nodes, f.step, f.category) == ([5], ["node-00"], 10, "integrity")
    assert f.observed == "9f3a77aa00112233" and f.expected == "params-000010"
    assert "rank 5 on node-00" in f.summary and "15 replicas" in f.summary
    assert f.first_seen == T0 + 10 and f.job_id == "job-a" and f.cluster == "c1"


def test_replicas_that_agree_raise_no_param_divergence():
    _, found = _run(FakeJob(16), 60)
    assert found == []


def test_two_replicas_that_differ_are_both_blamed_and_the_summary_says_so():
    # tp=8 on 16 ranks: every replica group has exactly 2 members (rank r and r + 8).
    job = FakeJob(16, tp=8, noise=False)
    _, found = _run(job, 20, over_from=5, over={11: {"param_checksum": "deadbeef00000000"}})
    assert checks(found) == ["param_divergence"]
    assert found[0].ranks == [3, 11]
    assert "no majority" in found[0].summary and "both are blamed" in found[0].summary


def test_tensor_parallel_shards_differ_without_divergence():
    _, found = _run(FakeJob(16, tp=4), 30)
    assert found == []


def test_a_rank_with_another_all_reduced_grad_norm_is_blamed():
    job = FakeJob(16, noise=False)
    _, found = _run(job, 30, over_from=7, over={12: {"grad_norm": 1.25 * 1.001}})
    assert checks(found) == ["grad_norm_mismatch"]
    assert (found[0].ranks, found[0].nodes, found[0].expected) == ([12], ["node-01"], 1.25)


def test_grad_norms_within_float_round_off_raise_nothing():
    job = FakeJob(16, noise=False)
    _, found = _run(job, 30, over_from=1, over={r: {"grad_norm": 1.25 * (1 + r * 1e-8)}
                                                for r in range(16)})
    assert found == []


def test_a_rank_with_another_learning_rate_is_blamed():
    job = FakeJob(8, noise=False)
    _, found = _run(job, 30, over_from=3, over={2: {"lr": 6e-4}})
    assert checks(found) == ["lr_mismatch"]
    assert found[0].ranks == [2] and found[0].observed == 6e-4 and found[0].expected == 3e-4
    assert "learning rate" in found[0].summary


def test_a_rank_running_other_code_is_blamed():
    job = FakeJob(16, noise=False)
    _, found = _run(job, 30, over_from=4, over={6: {"env_fingerprint": "env-evil"}})
    assert checks(found) == ["code_fingerprint"]
    assert (found[0].ranks, found[0].nodes, found[0].observed) == ([6], ["node-00"], "env-evil")


def test_code_changing_on_every_rank_mid_run_is_reported_once():
    job = FakeJob(8, noise=False)
    _, found = _run(job, 40, over_from=20, over={r: {"env_fingerprint": "env-0002"}
                                                 for r in range(8)})
    assert checks(found) == ["code_fingerprint"]
    assert found[0].step == 20 and "changed mid-run" in found[0].summary
    assert found[0].ranks == list(range(8))


def test_a_rank_whose_seed_departs_from_its_replicas_is_blamed():
    job = FakeJob(16, noise=False)
    _, found = _run(job, 30, over_from=8, over={1: {"seed_fingerprint": "seed-9999"}})
    assert checks(found) == ["seed_mismatch"]
    assert found[0].ranks == [1]


def test_seeds_may_differ_between_tensor_parallel_ranks():
    job = FakeJob(16, tp=4, noise=False)
    over = {r: {"seed_fingerprint": f"seed-tp{r % 4}"} for r in range(16)}
    _, found = _run(job, 30, over_from=1, over=over)
    assert found == []


def test_two_ranks_whose_lr_differs_by_float_noise_raise_nothing_and_do_not_crash():
    # Regression (#13): 1.5 rtol apart, each rank is within rtol of the median: the
    # mismatch path used to find nobody to blame and take argmax of an empty array.
    job = FakeJob(2, gpus=2, noise=False)
    _, found = _run(job, 5, over_from=1, over={1: {"lr": 3e-4 * (1 + 1.5e-6)}})
    assert found == []


def test_two_ranks_whose_lr_differs_beyond_twice_the_tolerance_are_both_blamed():
    job = FakeJob(2, gpus=2, noise=False)
    _, found = _run(job, 5, over_from=1, over={1: {"lr": 3e-4 * (1 + 1e-3)}})
    assert checks(found) == ["lr_mismatch"]
    assert found[0].ranks == [0, 1] and "both are blamed" in found[0].summary
