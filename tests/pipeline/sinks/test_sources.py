"""IngestSources: a refused row or line leads back to the message that made it."""

import math
import time

from trainguard.pipeline.ingest import Ingestor, RawMessage, TimeWindow
from trainguard.pipeline.sinks.sources import IngestSources
from trainguard.schemas.codec import encode
from trainguard.schemas.records import Heartbeat, StepBatch, StepRecord
from trainguard.schemas.topics import Topics

TOPICS = Topics("t")
#: Times are the store's guard to check here, not the ingest window's (which comes first).
NO_WINDOW = TimeWindow(max_future_s=math.inf, max_past_s=math.inf)
NOW = time.time()


def _step(step, rank=0):
    return StepRecord(job_id="j", rank=rank, world_size=2, node="n", step=step, ts=NOW)


def _msg(topic, value, offset):
    return RawMessage(topic=topic, partition=3, offset=offset, key=None, value=value,
                      timestamp=NOW)


def test_each_row_and_line_maps_to_its_own_message_skipping_the_rejected_ones():
    batch = StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=1, agent_id="a",
                      steps=[_step(1), _step(1, rank=1)])
    far = StepBatch(cluster="c", node="n", job_id="j", ts=NOW, seq=2, agent_id="a",
                    steps=[_step(2), StepRecord(job_id="j", rank=1, world_size=2, node="n",
                                                step=2, ts=1e308)])
    beat = Heartbeat(cluster="c", node="n", ts=NOW, seq=1, agent_id="a", agent_version="1",
                     backend="simulated", uptime_s=1.0, gpu_count=8)
    msgs = [_msg(TOPICS.steps, b"garbage", 0), _msg(TOPICS.steps, encode(batch), 1),
            _msg(TOPICS.steps, encode(_step(5)), 2), _msg(TOPICS.heartbeats, encode(beat), 3),
            _msg(TOPICS.steps, encode(far), 4)]
    result = Ingestor(TOPICS, window=NO_WINDOW).ingest(msgs)
    assert len(result.dead) == 1 and len(result.rows["steps"]) == 3
    source_of = IngestSources(msgs, result)
    assert source_of("step_batches_in", 0) is msgs[1]
    assert source_of("steps", 0) is msgs[2]  # the lone step record
    assert source_of("steps", 1) is msgs[4] and source_of("steps", 2) is msgs[4]
    assert source_of("agent_heartbeats", 0) is msgs[3]
    assert source_of("steps", 3) is None and source_of("findings", 0) is None
