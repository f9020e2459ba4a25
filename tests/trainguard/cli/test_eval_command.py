"""``trainguard eval --sweep`` and ``--clean-hours`` with the pipeline run faked."""

from __future__ import annotations

import json
from typing import Any

from trainguard.cli import main
from trainguard.evaluation.run import EvalReport
from trainguard.evaluation.scorecard import RunResult


def _result(label: str, seed: int, ttd: float | None) -> RunResult:
    return RunResult(scenario=label, kind="sabotage", seed=seed, detected=ttd is not None,
                     checks_fired=(), blamed=(), ttd_s=ttd, false_alerts=(), hardware=(),
                     severity="subtle")


def test_sweep_runs_every_size_and_writes_table_and_plot_into_benchmarks(
    monkeypatch: Any, tmp_path: Any, capsys: Any,
) -> None:
    seen: dict[str, Any] = {}

    def fake_run_eval(opts: Any, out: Any = print) -> EvalReport:
        seen["opts"] = opts
        return EvalReport([_result(v.label, s, 30.0) for v in opts.variants
                           for s in opts.seeds], "")

    monkeypatch.setattr("trainguard.evaluation.run_eval", fake_run_eval)
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# B\n\n<!-- sweeps:begin -->\nold\n<!-- sweeps:end -->\n")
    code = main(["eval", "--sweep", "straggler", "--seeds", "2", "--data-dir", str(tmp_path),
                 "--plots-dir", str(tmp_path / "img"), "--write-benchmarks", str(bench)])
    assert code == 0
    opts = seen["opts"]
    assert opts.scenarios == () and len(opts.variants) == 5 and opts.seeds == (0, 1)
    text = bench.read_text()
    assert "old" not in text and "| 1.1 | 2/2 | 30 / 30 | 0 | yes |" in text
    assert "(img/sweep-straggler.png)" in text
    assert (tmp_path / "img" / "sweep-straggler.png").exists()


def test_clean_hours_runs_clean_mix_jobs_and_fails_on_a_false_alarm(
    monkeypatch: Any, tmp_path: Any, capsys: Any,
) -> None:
    seen: dict[str, Any] = {}

    def fake_run_eval(opts: Any, out: Any = print) -> EvalReport:
        seen["opts"] = opts
        rows: list[dict[str, object]] = [
            {"job_id": "clean_mix-s1", "check": "straggler", "category": "availability",
             "ts": 5.0, "ranks": [3], "nodes": ["n-00"]},
            {"job_id": "clean_mix-s0", "check": "job_stalled", "category": "info", "ts": 1.0,
             "ranks": [], "nodes": []}]
        return EvalReport([], "", findings=rows)

    monkeypatch.setattr("trainguard.evaluation.run_eval", fake_run_eval)
    code = main(["eval", "--clean-hours", "2", "--clean-jobs", "4", "--data-dir",
                 str(tmp_path), "--json"])
    assert code == 1
    opts = seen["opts"]
    assert (opts.scenarios, opts.seeds, opts.ticks) == (("clean_mix",), (0, 1, 2, 3), 1800)
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and doc["job_hours"] == 2.0
    assert doc["false_alarms"] == ["clean_mix-s1 straggler(rank 3,n-00)"]
