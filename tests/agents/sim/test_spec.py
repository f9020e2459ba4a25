import pytest

from trainguard.agents.sim import JobSpec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, "nodes must be >= 1, got 0"),
        ({"gpus_per_node": 0}, "gpus_per_node must be within 1..256, got 0"),
        ({"gpus_per_node": 300}, "gpus_per_node must be within 1..256, got 300"),
        ({"tp_size": 0}, "tp_size must be >= 1, got 0"),
        ({"pp_size": -1}, "pp_size must be >= 1, got -1"),
        ({"tp_size": 3}, "tp_size \\* pp_size = 3 must divide the world size 32"),
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1, got 0"),
        ({"checkpoint_pause_s": -1}, "checkpoint_pause_s must be >= 0, got -1"),
        ({"eval_every": -5}, "eval_every must be >= 0, got -5"),
        ({"eval_s": 0}, "eval_s must be >= 1, got 0"),
        ({"total_steps": 0}, "total_steps must be >= 1, got 0"),
        ({"warmup_steps": 200, "total_steps": 100}, "warmup_steps must be within 0..total"),
        ({"base_lr": 0.0}, "base_lr must be a finite number > 0, got 0.0"),
        ({"base_lr": float("nan")}, "base_lr must be a finite number > 0, got nan"),
        ({"job_id": ""}, "job_id must be a non-empty string"),
        ({"node_prefix": "x" * 300}, "node_prefix must be a non-empty string"),
        ({"loss_noise": -0.1}, "loss_noise must be within 0..0.5 \\(relative\\), got -0.1"),
        ({"compute_noise": 0.9}, "compute_noise must be within 0..0.5"),
        ({"burst_p": 1.5}, "burst_p must be a probability within 0..1, got 1.5"),
        ({"burst_max": 1.0}, "burst_max must be >= 1.1, got 1.0"),
        ({"epoch_steps": -1}, "epoch_steps must be >= 0, got -1"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JobSpec(**kwargs)


def test_default_spec_is_four_nodes_of_eight_data_parallel_ranks():
    spec = JobSpec()
    assert (spec.world_size, spec.dp_size) == (32, 32)
    assert spec.node_names() == ["node-00", "node-01", "node-02", "node-03"]


def test_parallel_layout_puts_tensor_rank_fastest_then_pipeline_stage():
    spec = JobSpec(nodes=2, gpus_per_node=8, tp_size=2, pp_size=2)
    assert spec.dp_size == 4
    assert [spec.coords(r) for r in range(5)] == [
        (0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 0)
    ]
    assert spec.replicas_of(5) == [1, 5, 9, 13]


def test_lr_warms_up_linearly_then_decays_to_a_tenth():
    spec = JobSpec(warmup_steps=100, total_steps=1100, base_lr=1e-3)
    assert spec.lr_at(50) == pytest.approx(5e-4)
    assert spec.lr_at(100) == pytest.approx(1e-3)
    assert spec.lr_at(600) == pytest.approx(5.5e-4)
    assert spec.lr_at(1100) == pytest.approx(1e-4)
    assert spec.lr_at(5000) == pytest.approx(1e-4)
