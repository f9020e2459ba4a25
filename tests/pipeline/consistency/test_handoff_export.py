"""The partition export after #17 round 3 writes the very bytes main's did (frozen reference)."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import msgspec

from tests.pipeline.consistency.test_handoff import SPEC, _Clock, _feed, _ticks
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.consistency.codec import encode_state
from trainguard.pipeline.consistency.handoff import MAGIC, VERSION, _Envelope


def _old_saved(stage: ConsistencyStage, job: str) -> dict[str, Any]:
    """SilenceWatch.saved as main had it: one scan of every node per job."""
    silence = stage.silence
    nodes = [(name, node, silence._clocks.saved(name)) for name, node in silence._nodes.items()
             if (node.paged or node.job) == job]
    return {"nodes": nodes, "tracker": silence._trackers.get(job)}


def _old_export(stage: ConsistencyStage, part: str) -> bytes:
    """handoff.export_partition as main had it (the bound is not reached here)."""
    ids = [j for j in stage.jobs if stage._owners.get(j, ("", False))[0] == part]
    bodies = [encode_state([j, stage.owned_by_steps(j), stage.jobs[j], _old_saved(stage, j),
                            stage.clock_saved(j)], stage.config) for j in reversed(ids)]
    raw = msgspec.msgpack.encode(_Envelope(VERSION, stage.layout(), bodies))
    return MAGIC + zlib.crc32(raw).to_bytes(4, "big") + zlib.compress(raw, 1)


def _two_jobs() -> ConsistencyStage:
    clock = _Clock()
    stage = ConsistencyStage(clock=clock)
    other = dataclasses.replace(SPEC, job_id="job-i", node_prefix="other")
    quiet = {SPEC.node_name(1)}  # a node of job-h goes quiet: paged
    ticks = [a + b for a, b in zip(_ticks("weight_tamper", 30),
                                   _ticks("noisy_steps", 30, spec=other), strict=True)]
    ticks = ticks[:20] + [[(t, r) for t, r in tick if getattr(r, "node", "") not in quiet]
                          for tick in ticks[20:]]
    _feed(stage, clock, ticks)
    return stage


def test_a_partitions_export_is_byte_for_byte_mains() -> None:
    stage = _two_jobs()
    assert len(stage.jobs) == 2 and stage.partitions() == {"steps:0"}
    assert stage.export("steps:0") == _old_export(stage, "steps:0")


def test_saved_jobs_is_saved_of_each_job() -> None:
    stage = _two_jobs()
    both = stage.silence.saved_jobs(["job-h", "job-i", "job-none"])
    for job in ("job-h", "job-i", "job-none"):
        assert both[job] == _old_saved(stage, job)
    assert both["job-h"]["nodes"] and both["job-i"]["nodes"] and not both["job-none"]["nodes"]
