"""seed_mismatch and data epochs: a new epoch may change every replica's seed, nothing else may."""

from __future__ import annotations

from typing import Any

from tests.pipeline.consistency.helpers import FakeJob, checks, feed, first
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.schemas.records import StepBatch

EPOCH_STEPS = 10


def _run(*, odd: dict[int, str] | None = None, report_epoch: bool = True,
         change_at: int | None = None, steps: int = 40) -> list[list[StepBatch]]:
    """8 ranks whose seed fingerprint hashes the data epoch (a new one every 10 steps)."""
    job = FakeJob(8, noise=False)
    groups = []
    for s in range(1, steps + 1):
        epoch = (s - 1) // EPOCH_STEPS
        over: dict[int, dict[str, Any]] = {}
        for r in range(job.ranks):
            seed = f"seed-e{epoch}" if change_at is None or s < change_at else f"seed-x{epoch}"
            over[r] = {"seed_fingerprint": seed}
            if report_epoch:
                over[r]["data_epoch"] = epoch
        for r, when in (odd or {}).items():
            step, seed = when.split(":")
            if s >= int(step):
                over[r]["seed_fingerprint"] = seed
        groups.append(job.step(s, over=over))
    return groups


def test_every_rank_changing_its_seed_at_a_new_data_epoch_is_no_mismatch():
    assert first(feed(ConsistencyStage(), _run())) == []


def test_a_rank_keeping_the_old_epoch_s_seed_at_a_new_epoch_is_blamed():
    found = first(feed(ConsistencyStage(), _run(odd={3: "11:seed-e0"}, steps=20)))
    assert checks(found) == ["seed_mismatch"]
    assert found[0].ranks == [3] and found[0].step == 11


def test_a_rank_reseeded_within_an_epoch_is_still_blamed():
    found = first(feed(ConsistencyStage(), _run(odd={5: "14:seed-evil"}, steps=20)))
    assert [(f.check, f.ranks, f.step) for f in found] == [("seed_mismatch", [5], 14)]


def test_a_group_wide_change_without_a_new_data_epoch_is_still_a_change():
    found = first(feed(ConsistencyStage(), _run(change_at=15, steps=20)))
    assert checks(found) == ["seed_mismatch"]
    assert "changed mid-run" in found[0].summary and found[0].step == 15


def test_without_data_epochs_a_changing_seed_is_a_change_as_before():
    found = first(feed(ConsistencyStage(), _run(report_epoch=False, steps=15)))
    assert checks(found) == ["seed_mismatch"] and found[0].step == 11
