import time

import msgspec
import pytest

from trainguard.errors import ConfigError
from trainguard.pipeline.caps import DEFAULT_MAX_WORLD_SIZE, IngestCaps
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.ingest import Ingestor, RawMessage
from trainguard.pipeline.store.url import StoreUrl
from trainguard.schemas.codec import encode
from trainguard.schemas.records import (
    CheckpointEvent,
    GpuSample,
    GpuSampleBatch,
    StepBatch,
    StepRecord,
)
from trainguard.schemas.topics import Topics

TOPICS = Topics("t")
NOW = time.time()


def _msg(topic, record, offset=0):
    return RawMessage(topic=topic, partition=0, offset=offset, key=b"k", value=encode(record),
                      timestamp=NOW)


def _step(rank=0, world_size=8):
    return StepRecord(job_id="j", rank=rank, world_size=world_size, node="n1", step=1, ts=NOW)


def _steps(*steps):
    return StepBatch(cluster="c", node="n1", job_id="j", ts=NOW, seq=0, agent_id="a",
                     steps=list(steps))


def _samples(*indices):
    return GpuSampleBatch(cluster="c", node="n1", ts=NOW, seq=0, agent_id="a",
                          gpus=[GpuSample(index=i, util_gpu_pct=50.0) for i in indices])


def test_a_step_batch_whose_world_size_exceeds_the_cap_is_a_dead_letter_counted_by_reason():
    ingestor = Ingestor(TOPICS, IngestCaps(max_world_size=1024))
    result = ingestor.ingest([_msg(TOPICS.steps, _steps(_step(0, 1024))),
                              _msg(TOPICS.steps, _steps(_step(0, 8), _step(5, 1025)), 1)])
    assert result.records == 1
    (dead,) = result.dead
    assert dead.reason == "cap_world_size" and "1025" in dead.message
    assert ingestor.rejected == {"cap_world_size": 1}


def test_the_default_world_size_cap_admits_a_million_ranks_and_no_more():
    ingestor = Ingestor(TOPICS)
    big = DEFAULT_MAX_WORLD_SIZE
    result = ingestor.ingest([_msg(TOPICS.steps, _step(big - 1, big)),
                              _msg(TOPICS.steps, _step(0, big + 1), 1)])
    assert result.records == 1 and [d.reason for d in result.dead] == ["cap_world_size"]


def test_a_checkpoint_event_of_a_rank_past_the_cap_is_a_dead_letter():
    event = CheckpointEvent(cluster="c", job_id="j", node="n1", rank=2048, step=1, ts=NOW,
                            action="save", checkpoint_id="ck", digest="ab" * 16)
    result = Ingestor(TOPICS, IngestCaps(max_world_size=2048)).ingest(
        [_msg(TOPICS.steps, event)])
    assert [d.reason for d in result.dead] == ["cap_world_size"]


def test_a_rank_not_below_its_world_size_is_invalid():
    result = Ingestor(TOPICS).ingest([_msg(TOPICS.steps, _step(8, 8))])
    assert [d.reason for d in result.dead] == ["invalid"] and not result.decoded


def test_a_sample_batch_naming_one_gpu_twice_is_invalid():
    ingestor = Ingestor(TOPICS)
    result = ingestor.ingest([_msg(TOPICS.samples, _samples(0, 1, 2)),
                              _msg(TOPICS.samples, _samples(0, 3, 3, 1, 1), 1)])
    assert result.records == 1
    (dead,) = result.dead
    assert dead.reason == "invalid" and "GPU index 1, 3" in dead.message


def test_a_sample_batch_of_more_than_64_gpus_is_invalid():
    result = Ingestor(TOPICS).ingest([_msg(TOPICS.samples, _samples(*range(64))),
                                      _msg(TOPICS.samples, _samples(*range(65)), 1)])
    assert result.records == 1 and [d.reason for d in result.dead] == ["invalid"]


def test_a_world_size_cap_out_of_range_is_a_config_error():
    for bad in (0, 2**32 + 1):
        with pytest.raises(ConfigError, match="max_world_size"):
            IngestCaps(max_world_size=bad)


@pytest.mark.parametrize("field", ["max_world_size", "max_baseline_entities", "max_jobs"])
def test_the_worker_config_rejects_a_cap_below_one(field):
    with pytest.raises(ConfigError, match=field):
        WorkerConfig(bootstrap="localhost:9092", store=StoreUrl.parse("chdb:///tmp/x"),
                     **{field: 0})


def test_rejected_records_keep_their_bytes_for_the_dead_letter():
    raw = _msg(TOPICS.steps, _step(3, 2))
    (dead,) = Ingestor(TOPICS).ingest([raw]).dead
    assert msgspec.json.decode(dead.source.value)["rank"] == 3


def test_evictions_at_the_caps_are_exported_with_the_worker_health():
    from tests.pipeline.consistency.helpers import FakeJob
    from trainguard.pipeline.app import _with_caps
    from trainguard.pipeline.baselines import BaselineConfig, BaselineStage
    from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage
    from trainguard.pipeline.detect.quiet import AVAILABLE as QUIET

    baselines = BaselineStage(BaselineConfig(max_entities=2))
    checks = ConsistencyStage(ConsistencyConfig(max_jobs=1))
    for name in ("job-a", "job-b", "job-c"):
        batches = FakeJob(2, job_id=name).step(1)
        baselines.observe(batches)
        checks.observe(batches)
    metrics = _with_caps(lambda: {"alerts_queued": 3.0}, baselines, checks)()
    assert metrics == {"alerts_queued": 3.0, "baseline_entities_evicted": 4.0,
                       "consistency_jobs_evicted": 2.0, "consistency_records_malformed": 0.0,
                       "consistency_conflicting_records": 0.0,
                       "consistency_conflicting_saves": 0.0, "consistency_refused_saves": 0.0,
                       "consistency_unwitnessed_saves": 0.0, "consistency_witness_refused": 0.0,
                       "consistency_rank_claims": 0.0, "consistency_rank_events_dropped": 0.0,
                       # Consistency snapshots refused or truncated (issue #17).
                       "consistency_state_rejected": 0.0,
                       "consistency_state_jobs_left_out": 0.0,
                       "consistency_agent_restarts": 0.0,
                       "consistency_nodes_evicted": 0.0,
                       # Departures the baselines kept out of the anomalies (issue #16).
                       "baseline_suppressed_small": 0.0,
                       "baseline_suppressed_spike_quiet": 0.0,
                       "baseline_suppressed_episode": 0.0,
                       "baseline_suppressed_shared": 0.0,
                       # Points through the compiled quiet path, and passed on (round 5).
                       "baseline_quiet_taken": 12.0 if QUIET else 0.0,
                       "baseline_quiet_passed": 18.0 if QUIET else 0.0}


def test_conflicting_reports_are_exported_with_the_worker_health():
    from tests.pipeline.consistency.helpers import T0, FakeJob
    from trainguard.pipeline.app import _with_caps
    from trainguard.pipeline.consistency import ConsistencyStage

    job, checks = FakeJob(4, gpus=2, noise=False), ConsistencyStage()
    node0, node1 = job.step(1)
    forged = job._batch("node-01", [job.record(0, 1, T0 + 1.2, param_checksum="forged")])
    checks.observe([node0, forged, node1])
    metrics = _with_caps(None, None, checks)()
    assert metrics["consistency_conflicting_records"] == 1.0
    assert metrics["consistency_conflicting_saves"] == 0.0
