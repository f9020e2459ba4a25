"""Cross-rank checks end to end: simulated jobs → real Kafka → worker process → chdb findings.

Runs the scorecard harness (``trainguard eval``) on a few scenarios over the session's
real broker: each job's sabotage must be found, blaming the right rank or node within the
hard-fault target, and the benign job must raise no sabotage alert.
"""

from __future__ import annotations

import pytest

from trainguard.evaluation import EvalOptions, run_eval

pytestmark = pytest.mark.integration


def test_sabotage_is_found_and_named_and_a_clean_restart_is_not(bootstrap, tmp_path):
    opts = EvalOptions(data_dir=tmp_path, scenarios=("code_injection", "kill", "clean_restart"),
                       seeds=(3,), ticks=200, speed=40.0, bootstrap=bootstrap)
    report = run_eval(opts, out=lambda _line: None)
    by_name = {r.scenario: r for r in report.results}
    for name, check in [("code_injection", "code_fingerprint"), ("kill", "rank_missing")]:
        r = by_name[name]
        assert r.detected and check in r.checks_fired, r
        assert r.ttd_s is not None and 0 <= r.ttd_s <= 10, r
        assert r.false_alerts == (), r
    assert by_name["clean_restart"].false_alerts == ()
    assert report.passed, report.table
    assert report.wall_latency_s, "no detection reached the store"
