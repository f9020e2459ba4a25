"""Replica groups are ``(tp_rank, pp_rank, shard, ep_rank)``: a sharded job compares by shard."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.pipeline.consistency.helpers import T0, FakeJob, checks, feed, first
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.consistency.columns import layout_text, step_columns
from trainguard.schemas.records import StepBatch

STEPS = range(1, 12)


def _sharded(replicas: int, shards: int, *, tamper: dict[int, int] | None = None,
             ep: bool = False) -> list[list[StepBatch]]:
    """HSDP: rank r holds shard r % shards; a shard's replicas hash the same parameters."""
    job = FakeJob(replicas * shards, gpus=4, noise=False)
    tamper = tamper or {}
    groups = []
    for s in STEPS:
        over: dict[int, dict[str, Any]] = {}
        for r in range(job.ranks):
            shard = r % shards
            over[r] = {"shard": shard, "dp_rank": r // shards,
                       "param_checksum": f"s{s:04d}-shard{shard}"
                       + ("-x" if s >= tamper.get(r, 1 << 30) else ""),
                       "seed_fingerprint": f"seed-shard{shard}"}
            if ep:
                over[r]["ep_rank"] = shard % 2
        groups.append(job.step(s, over=over))
    return groups


def test_an_hsdp_job_whose_shards_differ_raises_no_divergence():
    assert first(feed(ConsistencyStage(), _sharded(2, 4))) == []


def test_a_tampered_shard_replica_is_named_among_three():
    found = first(feed(ConsistencyStage(), _sharded(3, 4, tamper={5: 6})))
    assert checks(found) == ["param_divergence"]
    [f] = found
    assert f.ranks == [5] and f.step == 6
    assert f.evidence["shard"] == 1 and f.evidence["ep_rank"] == -1
    assert "(shard 1)" in f.summary


def test_a_tampered_replica_of_two_blames_only_its_shard_pair():
    found = first(feed(ConsistencyStage(), _sharded(2, 4, tamper={5: 6})))
    assert [(f.check, f.ranks) for f in found] == [("param_divergence", [1, 5])]


def test_pure_fsdp_every_rank_its_own_shard_raises_nothing():
    assert first(feed(ConsistencyStage(), _sharded(1, 8))) == []


def test_expert_parallel_rank_is_part_of_the_replica_group():
    assert first(feed(ConsistencyStage(), _sharded(3, 4, ep=True))) == []


def test_no_layout_is_one_group_and_coordinates_are_packed_or_kept():
    job = FakeJob(4, noise=False)
    cols = step_columns(job.step(1)[0].steps)
    assert cols.n_groups == 1 and cols.group_keys == [(-1, -1, -1, -1)]
    big = 2**32 - 1  # too large to pack four of: the rows are compared as they are
    recs = [job.record(r, 1, T0, tp_rank=big if r % 2 else 0, pp_rank=big, shard=big,
                       ep_rank=r // 2) for r in range(4)]
    cols = step_columns(recs)
    assert cols.n_groups == 4
    assert sorted(cols.group_keys) == [(0, big, big, 0), (0, big, big, 1), (big, big, big, 0),
                                       (big, big, big, 1)]
    assert np.array_equal(cols.group, [cols.group_keys.index((big if r % 2 else 0, big, big,
                                                               r // 2)) for r in range(4)])
    mixed = [job.record(r, 1, T0, shard=r % 2 if r else None) for r in range(4)]
    cols = step_columns(mixed)
    assert [cols.group_keys[g] for g in cols.group.tolist()] == [
        (-1, -1, -1, -1), (-1, -1, 1, -1), (-1, -1, 0, -1), (-1, -1, 1, -1)]


def test_layout_text_names_the_reported_coordinates_only():
    assert layout_text((-1, -1, -1, -1)) == ""
    assert layout_text((0, 1, -1, -1)) == " (tp 0, pp 1)"
    assert layout_text((-1, -1, 3, 2)) == " (shard 3, ep 2)"


def test_checksums_of_different_steps_are_not_compared():
    job = FakeJob(4, noise=False)
    groups = []
    for s in STEPS:
        # Ranks 0-2 report the previous step's checksum (late, as the kit does); rank 3
        # the current one: equal hashes of different steps, never compared.
        over: dict[int, dict[str, Any]] = {r: {"param_checksum": f"p{s - 1}",
                                               "checksum_step": s - 1} for r in range(3)}
        over[3] = {"param_checksum": f"p{s}"}
        groups.append(job.step(s, over=over))
    assert first(feed(ConsistencyStage(), groups)) == []
    late = FakeJob(4, noise=False)
    tampered = [late.step(s, over={r: {"param_checksum": "x" if (r, s) == (1, 6)
                                       else f"p{s - 1}", "checksum_step": s - 1}
                                   for r in range(4)}) for s in STEPS]
    found = first(feed(ConsistencyStage(), tampered))
    assert [(f.check, f.ranks, f.step) for f in found] == [("param_divergence", [1], 6)]
