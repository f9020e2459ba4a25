"""A job stopped as a whole (SIGTERM to every torchrun) is no rank_exited, however its
ranks' departures fall into the worker's judgements (found in the real-job e2e test)."""

from __future__ import annotations

from tests.pipeline.consistency.test_rank_events import (
    _bye,
    _ev,
    _events,
    _job,
    _run,
    _samples,
    _steps,
)


def test_departures_judged_together_all_count_as_having_left():
    job = _job()
    # As torchrun tears a job down: every rank says bye terminated at once and exits
    # within a tenth of a second; nothing else arrives until the agents' next samples.
    stop = _events(job, *[e for r in range(4) for e in (
        _bye(r, 10.2, "terminated"), _ev(r, 10.3 + r / 30, "exited", signal=15))])
    found = _run([*_steps(job, 10), stop, *_samples(job, 20, 21, 22)])
    assert found == [], [f.summary for f in found]
