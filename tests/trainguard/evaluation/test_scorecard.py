"""Scoring findings against the simulator's ground truth (pure functions, no pipeline)."""

from trainguard.agents.sim import Expectation
from trainguard.evaluation.scorecard import markdown_table, score_run, summarize

T0 = 1_800_000_150.0
KILL = Expectation(checks=frozenset({"rank_missing"}), culprit_ranks=frozenset({4, 5}),
                   culprit_nodes=frozenset({"n-01"}), severity="hard", starts_at_ts=T0,
                   tolerated=frozenset({"node_idle"}))
BENIGN = Expectation(checks=frozenset(), culprit_ranks=frozenset(), culprit_nodes=frozenset(),
                     severity=None, starts_at_ts=T0)


def _f(check, ts, ranks=(), nodes=(), category="availability"):
    return {"check": check, "category": category, "ts": ts, "first_seen": ts,
            "ranks": list(ranks), "nodes": list(nodes)}


def test_a_finding_of_the_expected_check_blaming_only_culprits_is_a_detection():
    r = score_run("kill", "sabotage", 0, KILL, [
        _f("node_idle", T0 + 9, nodes=["n-01"]),           # tolerated side effect
        _f("rank_missing", T0 + 4, ranks=[4, 5], nodes=["n-01"]),
    ])
    assert r.detected and r.ttd_s == 4.0 and r.false_alerts == ()
    assert r.checks_fired == ("rank_missing",)


def test_blaming_an_innocent_rank_is_not_a_detection_and_counts_as_false():
    r = score_run("kill", "sabotage", 0, KILL, [_f("rank_missing", T0 + 4, ranks=[4, 9])])
    assert not r.detected and r.ttd_s is None
    assert r.false_alerts == ("rank_missing(rank 4,rank 9)",)


def test_on_a_benign_run_any_sabotage_alert_is_false_but_hardware_is_not():
    r = score_run("thermal", "benign", 1, BENIGN, [
        _f("gpu_throttled", T0 + 3, nodes=["n-00"], category="hardware"),
        _f("straggler", T0 + 30, nodes=["n-00"], category="availability"),
    ])
    assert r.false_alerts == ("straggler(n-00)",) and r.hardware == ("gpu_throttled",)


def test_a_scenario_passes_only_when_every_seed_is_detected_within_its_target():
    fast = score_run("kill", "sabotage", 0, KILL, [_f("rank_missing", T0 + 5, ranks=[4])])
    slow = score_run("kill", "sabotage", 1, KILL, [_f("rank_missing", T0 + 15, ranks=[5])])
    (summary,) = summarize([fast, slow])
    assert summary.detected == 2 and not summary.passed  # 15 s > the 10 s hard-fault target
    (ok,) = summarize([fast])
    assert ok.passed
    table = markdown_table([summary])
    assert "| kill | sabotage | 2/2 | rank_missing | 10 / 15 | ≤ 10 s | 0 | — | FAIL |" in table


def test_a_job_wide_finding_detects_a_job_wide_fault_and_only_that():
    job_wide = Expectation(checks=frozenset({"code_fingerprint"}),
                           culprit_ranks=frozenset({0, 1}), culprit_nodes=frozenset({"n-00"}),
                           severity="hard", starts_at_ts=T0, job_wide=True)
    r = score_run("job_code", "sabotage", 0, job_wide,
                  [_f("code_fingerprint", T0 + 2, category="integrity")])
    assert r.detected and r.ttd_s == 2.0 and r.blamed == ("code_fingerprint(job)",)
    # The same job-wide finding on a fault of one rank names nobody: not a detection.
    one = Expectation(checks=frozenset({"code_fingerprint"}), culprit_ranks=frozenset({1}),
                      culprit_nodes=frozenset({"n-00"}), severity="hard", starts_at_ts=T0)
    r = score_run("code", "sabotage", 0, one,
                  [_f("code_fingerprint", T0 + 2, category="integrity")])
    assert not r.detected and r.false_alerts == ("code_fingerprint(job)",)
