"""The baselines' batch gatherer: cached entity rows give what a key-by-key lookup gives."""

import random

import numpy as np
import pytest

from trainguard.pipeline.baselines import BaselineConfig, BaselineStage
from trainguard.pipeline.detect import BankConfig
from trainguard.schemas.records import GpuSample, GpuSampleBatch, StepBatch, StepRecord

T0 = 1_795_000_000.0
#: Small windows so a few hundred batches warm up, alarm, clear and re-learn.
QUICK = BankConfig(min_samples=10, window=20, relearn_after=40, cp_after=20, spike_quiet_s=0)


def _gpus(rng, node, lost, shift):
    indices = range(4) if rng.random() < 0.95 else [0, 0, 2]  # a repeated GPU now and then
    return [GpuSample(index=g, lost=True) if (node, g) in lost else
            GpuSample(index=g, util_gpu_pct=90 + rng.gauss(0, 2) - shift * (g == 1),
                      power_w=None if rng.random() < 0.03 else 500 + rng.gauss(0, 5))
            for g in indices]


def _steps(rng, node, job, b):
    jump = 0.5 if (node == "n5" and b > 200) else 0.0
    return [StepRecord(job_id=job if rng.random() < 0.97 else "other", rank=r, world_size=8,
                       node=node, step=b, ts=T0 + b + rng.random(),
                       loss=2.0 + rng.gauss(0, 0.01) + jump * (r == 1),
                       grad_norm=1.0 + rng.gauss(0, 0.05))
            for r in (range(4) if rng.random() < 0.9 else [1, 3])]


def _workload(seed, batches=300):
    """Batches of mixed records: lost GPUs, jobs that change, repeats, late points, a node
    that goes silent and comes back."""
    rng, nodes = random.Random(seed), [f"n{i}" for i in range(10)]
    job = {n: rng.choice(["ja", "jb", None]) for n in nodes}
    lost: set[tuple[str, int]] = set()
    for b in range(batches):
        records, sources = [], []
        for _ in range(rng.randint(0, 12)):  # a node may come twice in one batch
            node = rng.choice(nodes)
            if node == "n9" and 160 <= b < 220:
                continue  # silent long enough to expire, then back as it was
            if rng.random() < 0.01:
                job[node] = rng.choice(["ja", "jb", "jc", None])
            if rng.random() < 0.01:
                lost ^= {(node, rng.randrange(4))}
            ts = T0 + b + rng.random() * 3 - (5 if rng.random() < 0.02 else 0)
            if rng.random() < 0.5:
                records.append(GpuSampleBatch(
                    cluster="c", node=node, ts=ts, seq=b, agent_id="a", job_id=job[node],
                    gpus=_gpus(rng, node, lost, 40 if (node == "n3" and b > 150) else 0)))
            else:
                steps = _steps(rng, node, job[node] or "jz", b)
                records.append(StepBatch(cluster="c", node=node, job_id=job[node] or "jz",
                                         ts=ts, seq=b, agent_id="a", steps=steps)
                               if rng.random() < 0.95 else steps[0])
            sources.append(f"p{rng.randrange(3)}")
        yield records, sources


def _run(config, seed, cached):
    stage, found = BaselineStage(config), []
    for b, (records, sources) in enumerate(_workload(seed)):
        if not cached:  # every record takes the key-by-key path
            stage.gpus.cache.clear()
            stage.ranks.cache.clear()
        found += stage.observe(records, sources)
        if b % 97 == 50:  # a partition moves away and back
            blob = stage.export("p1")
            stage.drop("p1")
            stage.load("p1", blob)
    return stage, found


@pytest.mark.parametrize(("seed", "config"), [
    (0, BaselineConfig(idle_s=40, bank=QUICK)),
    (1, BaselineConfig(idle_s=40, max_entities=20, bank=QUICK)),  # evicting all the time
])
def test_cached_rows_give_the_same_results_as_looking_every_key_up(seed, config):
    cached, found = _run(config, seed, cached=True)
    keyed, expected = _run(config, seed, cached=False)
    assert found == expected and found  # the workload does find anomalies
    assert cached.suppressed() == keyed.suppressed()
    assert (cached.evicted, cached.expired) == (keyed.evicted, keyed.expired)
    assert cached.snapshot_rows() == keyed.snapshot_rows()
    for part in ("p0", "p1", "p2"):
        assert cached.export(part) == keyed.export(part)
    for mine, theirs in ((cached.gpus, keyed.gpus), (cached.ranks, keyed.ranks)):
        assert mine.meta == theirs.meta and mine.groups == theirs.groups
        assert list(mine.source.items()) == list(theirs.source.items())
        assert np.array_equal(mine.registry.state()["last_seen"],
                              theirs.registry.state()["last_seen"], equal_nan=True)
        for metric, bank in mine.banks.items():
            other = theirs.banks[metric].state()
            assert all(np.array_equal(v, other[k], equal_nan=True)
                       for k, v in bank.state().items())


def _node(ts, job, util=95.0, lost=()):
    gpus = [GpuSample(index=g, lost=True) if g in lost else
            GpuSample(index=g, util_gpu_pct=util + (ts % 3) if g == 1 else 95.0 + (ts % 2),
                      power_w=600.0)
            for g in range(2)]
    return GpuSampleBatch(cluster="c", node="n1", ts=ts, seq=int(ts), agent_id="a",
                          gpus=gpus, job_id=job)


def test_a_gpu_that_moves_to_another_job_is_reported_with_the_new_one():
    stage, found = BaselineStage(), []
    for i in range(120):
        found += stage.observe([_node(T0 + i, "a" if i < 60 else "b",
                                      util=95.0 if i < 100 else 5.0)])
    assert {(a.entity, a.job_id) for a in found} == {("n1/1", "b")}


def test_a_lost_gpu_stops_learning_until_it_is_back():
    stage = BaselineStage()
    for i in range(40):
        stage.observe([_node(T0 + i, "a", lost=(1,) if 10 <= i < 30 else ())])
    _, _, count = stage.gpus.banks["util_gpu_pct"].baseline(
        np.array([stage.gpus.registry.get("n1/0"), stage.gpus.registry.get("n1/1")]))
    assert count.tolist() == [40, 20]  # n1/1 learnt nothing while lost
