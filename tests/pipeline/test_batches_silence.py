"""The glue: heartbeats reach the consistency stage, and a silent agent's page is published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tests.pipeline.fakes import FakeEvent, FakeTopic, events, faust_acks, raw, run
from trainguard.pipeline.batches import BatchHandler
from trainguard.pipeline.consistency import ConsistencyStage
from trainguard.pipeline.ingest import Ingestor
from trainguard.pipeline.offsets import HeldOffsets
from trainguard.pipeline.publish import Publisher
from trainguard.schemas.codec import RecordDecoder, encode
from trainguard.schemas.records import Finding, GpuSampleBatch, Heartbeat
from trainguard.schemas.topics import Topics

TOPICS = Topics("t")
T0 = float(int(time.time()))


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def _landed(rows: Mapping[str, Sequence[Any]], lines: Any, sources: Any = None
            ) -> asyncio.Future[int]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(0)
    return future


def _tick(node: str, t: int, offset: int) -> list[FakeEvent]:
    """One second of a node running job-x: its sample batch, and a heartbeat every 5 s."""
    batch = GpuSampleBatch(cluster="c", node=node, ts=T0 + t, seq=t, agent_id=f"a-{node}",
                           gpus=[], job_id="job-x")
    out = events(TOPICS.samples, [offset], values=[encode(batch)])
    if t % 5 == 0:
        beat = Heartbeat(cluster="c", node=node, ts=T0 + t, seq=t, agent_id=f"a-{node}",
                         agent_version="t", uptime_s=float(t), backend="simulated",
                         gpu_count=8, job_id="job-x")
        out += events(TOPICS.heartbeats, [offset], values=[encode(beat)])
    return out


def test_a_node_whose_agent_stops_is_published_as_agent_silent_by_close_steps() -> None:
    async def main() -> list[Finding]:
        clock, findings = Clock(), FakeTopic()
        stage = ConsistencyStage(clock=clock)
        publisher = Publisher("w", dead_letters=FakeTopic(), anomalies=FakeTopic(),
                              findings=findings)
        handler = BatchHandler(Ingestor(TOPICS, clock=clock), publisher,
                               HeldOffsets(lambda _e: None), _landed, consistency=stage)
        for t in range(15):
            clock.t = T0 + t
            batch = _tick("n1", t, 2 * t) + (_tick("n2", t, 2 * t + 1) if t <= 5 else [])
            await handler.handle(raw(batch), batch)
            faust_acks(batch)
            await handler.close_steps()
        decoder = RecordDecoder(Finding)
        return [decoder.decode(s.value) for s in findings.sent]

    found = [f for f in run(main()) if f.check == "agent_silent"]
    assert [(f.nodes, f.job_id, f.ts) for f in found] == [(["n2"], "job-x", T0 + 13)]
