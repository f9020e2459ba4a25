"""Strict names checked once per distinct name, with msgspec's own verdict and words."""

import msgspec
import pytest

from trainguard.schemas.codec import RecordDecoder, RecordError, convert, encode
from trainguard.schemas.names import NAMES, NameCache, names_check, strict_twin
from trainguard.schemas.records import (
    NAME_PATTERN,
    GpuSample,
    GpuSampleBatch,
    StepBatch,
    StepRecord,
)

_STEP = StepRecord(job_id="job-7", rank=0, world_size=8, node="node-01", step=1, ts=1.0)
_REGEX = f"Expected `str` matching regex {NAME_PATTERN!r}"


def _steps(*steps: StepRecord) -> StepBatch:
    return StepBatch(cluster="c", node="node-01", job_id="job-7", ts=1.0, seq=0, agent_id="a",
                     steps=list(steps))


def test_the_cache_holds_at_most_its_size_and_starts_over_when_full():
    cache = NameCache(size=3)
    for i in range(10):
        assert cache.ok(f"node-{i}")
        assert 1 <= len(cache) <= 3
    assert "node-9" in cache and "node-0" not in cache


def test_a_name_that_fails_once_fails_every_time_and_is_never_remembered():
    cache = NameCache(size=8)
    for _ in range(3):
        assert not cache.ok("bad name")
    assert "bad name" not in cache and len(cache) == 0


def test_a_bad_name_deep_in_a_step_batch_is_the_same_invalid_record_at_the_same_place():
    wire = encode(_steps(_STEP, msgspec.structs.replace(_STEP, rank=1, node="evil node")))
    with pytest.raises(RecordError) as err:
        RecordDecoder(StepBatch).decode(wire)
    assert err.value.reason == "invalid"
    assert err.value.message == f"{_REGEX} - at `$.steps[1].node`"


def test_a_bad_name_fails_again_after_its_good_twin_was_cached():
    decoder = RecordDecoder(StepBatch)
    assert decoder.decode(encode(_steps(_STEP))).steps == [_STEP]
    assert "node-01" in NAMES
    for _ in range(2):
        with pytest.raises(RecordError, match="steps"):
            decoder.decode(encode(_steps(msgspec.structs.replace(_STEP, node="node-01 "))))


def test_a_bad_name_before_another_fault_is_the_fault_reported_as_before():
    wire = encode(_steps(msgspec.structs.replace(_STEP, node="-x"))).replace(
        b'"step":1,', b'"step":-1,')
    assert wire.index(b'"node":"-x"') < wire.index(b'"step":-1')
    with pytest.raises(RecordError) as err:
        RecordDecoder(StepBatch).decode(wire)
    assert err.value.message == f"{_REGEX} - at `$.steps[0].node`"


def test_a_fault_before_a_bad_name_is_the_fault_reported_as_before():
    wire = encode(_steps(msgspec.structs.replace(_STEP, node="-x"))).replace(
        b'"rank":0', b'"rank":-1')
    with pytest.raises(RecordError) as err:
        RecordDecoder(StepBatch).decode(wire)
    assert err.value.message == "Expected `int` >= 0 - at `$.steps[0].rank`"


def test_types_without_strict_names_need_no_check():
    assert names_check(GpuSample) is None and names_check(int) is None
    assert names_check(GpuSampleBatch) is not None


def test_the_strict_twin_rejects_what_the_check_rejects_with_msgspecs_message():
    wire = encode(msgspec.structs.replace(_STEP, job_id="x;y"))
    assert not names_check(StepRecord)(msgspec.json.decode(wire, type=StepRecord))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.job_id"):
        msgspec.json.decode(wire, type=strict_twin(StepRecord))


def test_convert_checks_names_as_a_strict_msgspec_convert_did():
    obj = msgspec.to_builtins(_STEP)
    assert convert(obj, StepRecord) == _STEP
    with pytest.raises(msgspec.ValidationError) as err:
        convert({**obj, "job_id": "a b", "step": -1}, StepRecord)
    assert str(err.value) == f"{_REGEX} - at `$.job_id`"
    with pytest.raises(msgspec.ValidationError, match=r"\$\.rank"):
        convert({**obj, "rank": -1, "node": "a b"}, StepRecord)
