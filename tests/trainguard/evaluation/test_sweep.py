"""Size sweeps, their plots and the clean-hours summary (pure parts, no pipeline)."""

import pytest

from trainguard.errors import ConfigError
from trainguard.evaluation.clean import clean_summary, clean_table
from trainguard.evaluation.extras import clean_plan, sweep_block, sweep_outputs
from trainguard.evaluation.plots import draw_sweep
from trainguard.evaluation.run import EvalReport
from trainguard.evaluation.scorecard import RunResult
from trainguard.evaluation.sweep import (
    SWEEPS,
    Sweep,
    replace_block,
    resolve_sweeps,
    sweep_points,
    sweep_table,
)

SWEEP = Sweep("straggler", "node_slowdown", "factor", (1.05, 1.1, 1.5), "factor")


def _result(label, seed, ttd, false=()):
    return RunResult(scenario=label, kind="sabotage", seed=seed, detected=ttd is not None,
                     checks_fired=("straggler",) if ttd is not None else (), blamed=(),
                     ttd_s=ttd, false_alerts=tuple(false), hardware=(), severity="subtle")


RESULTS = [
    _result("node_slowdown:factor:1.05", 0, None), _result("node_slowdown:factor:1.05", 1, 200.0),
    _result("node_slowdown:factor:1.1", 0, 30.0), _result("node_slowdown:factor:1.1", 1, 50.0),
    _result("node_slowdown:factor:1.5", 0, 10.0, false=["loss_outlier(rank 3)"]),
    _result("node_slowdown:factor:1.5", 1, 12.0),
]


def test_each_size_of_a_sweep_is_a_variant_with_its_parameter_set():
    v = SWEEP.variants()
    assert [x.label for x in v] == ["node_slowdown:factor:1.05", "node_slowdown:factor:1.1",
                                    "node_slowdown:factor:1.5"]
    assert v[1].scenario == "node_slowdown" and v[1].params == (("factor", 1.1),)


def test_the_issue_sweeps_cover_the_sizes_it_names():
    assert SWEEPS["straggler"].values == (1.03, 1.05, 1.1, 1.2, 1.5)
    assert SWEEPS["loss"].values == (0.01, 0.02, 0.03, 0.05, 0.1)
    assert SWEEPS["lr"].values == (0.5, 0.8, 1.5, 2.0, 3.0)


def test_a_sweep_whose_scenario_is_not_registered_is_skipped_with_a_note(monkeypatch):
    import trainguard.evaluation.sweep as sweep

    monkeypatch.setattr(sweep, "list_scenarios", lambda: ["node_slowdown", "poisoned_data"])
    ready, notes = resolve_sweeps(["all"])
    assert [s.name for s in ready] == ["straggler", "loss"]
    assert notes == ["sweep lr: scenario 'job_lr_change' is not registered, skipped"]


def test_an_unknown_sweep_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown sweep 'size'; expected one of: straggler"):
        resolve_sweeps(["size"])


def test_sweep_points_give_detection_rate_and_time_to_detect_per_size():
    p = sweep_points(SWEEP, RESULTS)
    assert [(x.value, x.detected, x.runs) for x in p] == [(1.05, 1, 2), (1.1, 2, 2), (1.5, 2, 2)]
    assert [x.rate for x in p] == [0.5, 1.0, 1.0]
    assert (p[1].ttd_median_s, p[1].ttd_worst_s) == (40.0, 50.0)
    assert [x.in_target for x in p] == [False, True, True]  # subtle: within 120 s
    assert p[2].false_alerts == 1


def test_sweep_table_has_a_row_per_size():
    table = sweep_table(SWEEP, sweep_points(SWEEP, RESULTS))
    lines = table.splitlines()
    assert len(lines) == 5 and "factor" in lines[0]
    assert lines[2] == "| 1.05 | 1/2 | 200 / 200 | 0 | no |"
    assert lines[3] == "| 1.1 | 2/2 | 40 / 50 | 0 | yes |"


def test_replace_block_replaces_between_markers_or_appends():
    text = "# B\n\nbefore\n<!-- a -->\nold\n<!-- b -->\nafter\n"
    assert replace_block(text, "<!-- a -->", "<!-- b -->", "new") == \
        "# B\n\nbefore\n<!-- a -->\nnew\n<!-- b -->\nafter\n"
    assert replace_block("# B\n", "<!-- a -->", "<!-- b -->", "new") == \
        "# B\n\n<!-- a -->\nnew\n<!-- b -->\n"


def test_draw_sweep_writes_a_png(tmp_path):
    path = draw_sweep(tmp_path / "img" / "sweep.png", SWEEP, sweep_points(SWEEP, RESULTS))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_sweep_block_links_each_plot_relative_to_the_benchmarks_file(tmp_path):
    report = EvalReport(RESULTS, "")
    outputs = sweep_outputs([SWEEP], report, tmp_path / "docs" / "img")
    block = sweep_block(outputs, "Command: x", tmp_path)
    assert "![straggler sweep: detection rate and time to detect](docs/img/sweep-straggler.png)" \
        in block
    assert (tmp_path / "docs" / "img" / "sweep-straggler.png").exists()
    assert block.startswith("Command: x") and "| 1.1 | 2/2 |" in block


def _row(job, check, category, ranks=(), nodes=()):
    return {"job_id": job, "check": check, "category": category, "ts": 1.0,
            "ranks": list(ranks), "nodes": list(nodes)}


def test_clean_summary_lists_integrity_and_availability_findings_as_false_alarms():
    s = clean_summary([
        _row("clean_mix-s0", "job_stalled", "info"),
        _row("clean_mix-s0", "job_stalled", "info"),
        _row("clean_mix-s1", "gpu_throttled", "hardware", nodes=["n-01"]),
        _row("clean_mix-s1", "straggler", "availability", ranks=[3], nodes=["n-00"]),
    ], job_hours=2.0, jobs=2)
    assert not s.passed
    assert s.false_alarms == ("clean_mix-s1 straggler(rank 3,n-00)",)
    assert (s.per_category("info"), s.per_category("hardware")) == (2, 1)
    table = clean_table(s)
    assert "| info | 2 | job_stalled (2) |" in table and "| integrity | 0 | — |" in table


def test_clean_plan_splits_the_hours_over_the_jobs():
    plan = clean_plan(2.0, 4)
    assert (plan.jobs, plan.ticks, plan.hours) == (4, 1800, 2.0)
    with pytest.raises(ValueError, match="clean hours must be > 0, got 0"):
        clean_plan(0, 4)
