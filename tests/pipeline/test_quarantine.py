"""Quarantine: bisection to the records a stage raises on, counters, rate-limited logs."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from tests.pipeline.fakes import Clock
from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.quarantine import STAGE_ERROR, Quarantine, isolate


def _run_failing_on(bad: set[int], calls: list[Sequence[int]]):  # noqa: ANN202
    def run(idx: Sequence[int]) -> list[int]:
        calls.append(list(idx))
        if bad.intersection(idx):
            raise ValueError(f"bad among {list(idx)}")
        return [i * 10 for i in idx]

    return run


def test_isolate_returns_everything_in_one_call_when_nothing_fails() -> None:
    calls: list[Sequence[int]] = []
    out = isolate(_run_failing_on(set(), calls), range(100), lambda i, e: None)
    assert out == [i * 10 for i in range(100)] and len(calls) == 1


@pytest.mark.parametrize("bad", [{0}, {99}, {3, 4, 70}, set(range(100))])
def test_isolate_reports_exactly_the_bad_records_and_keeps_the_others_in_order(
        bad: set[int]) -> None:
    calls: list[Sequence[int]] = []
    errors: list[int] = []
    out = isolate(_run_failing_on(bad, calls), range(100), lambda i, e: errors.append(i))
    assert errors == sorted(bad)
    assert out == [i * 10 for i in range(100) if i not in bad]
    if len(bad) == 1:
        assert len(calls) <= 2 * 7 + 1  # bisection, not one call per record


def _source(offset: int = 3) -> RawMessage:
    return RawMessage("t.steps", 1, offset, b"k", b'{"kind":"step"}', 1.0)


def test_a_dead_letter_names_the_stage_and_exception_and_keeps_the_source_bytes() -> None:
    q = Quarantine()
    letter = q.dead_letter("consistency", KeyError("rank"), _source(), job="j1")
    assert letter.reason == STAGE_ERROR == "stage_error"
    assert letter.message == "stage consistency raised KeyError: 'rank'"
    assert letter.source.value == b'{"kind":"step"}' and letter.row()["offset"] == 3
    assert q.errors == {"consistency": 1} and q.total() == 1
    q.job_reset("consistency", ["j1", "j2"], KeyError("rank"))
    assert q.health() == {"stage_errors_consistency": 1.0, "stage_jobs_reset": 2.0}


def test_failures_are_logged_at_most_once_per_interval_per_stage_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(0.0)
    q = Quarantine(log_every_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="trainguard.pipeline.quarantine"):
        for i in range(500):
            q.dead_letter("baselines", ValueError("x"), _source(i))
        q.failed("alerts", ValueError("y"))
        clock.advance(10.0)
        q.dead_letter("baselines", ValueError("x"), _source(500))
    lines = [r for r in caplog.records if r.name == "trainguard.pipeline.quarantine"]
    assert [("stage=baselines" in r.getMessage(), "stage=alerts" in r.getMessage())
            for r in lines] == [(True, False), (False, True), (True, False)]
    assert lines[0].exc_info is not None and lines[2].exc_info is None  # traceback once
    assert "not_logged=499" in lines[2].getMessage() and "offset=500" in lines[2].getMessage()
    assert q.errors == {"baselines": 501, "alerts": 1}
