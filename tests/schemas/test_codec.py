import time

import msgspec
import pytest

from trainguard.schemas.codec import MAX_RECORD_BYTES, RecordDecoder, RecordError, encode
from trainguard.schemas.records import (
    Alert,
    Anomaly,
    GpuSample,
    GpuSampleBatch,
    Heartbeat,
    StepBatch,
    StepRecord,
    XidEvent,
)


def _batch(**kw):
    fields = dict(
        cluster="c1",
        node="node-1",
        ts=time.time(),
        seq=7,
        agent_id="a1",
        gpus=[
            GpuSample(
                index=0, util_gpu_pct=97.5, power_w=650.0, xid_events=(XidEvent(xid=79, ts=1.0),)
            ),
            GpuSample(index=1, lost=True),
        ],
    )
    fields.update(kw)
    return GpuSampleBatch(**fields)


def test_every_record_kind_roundtrips():
    now = time.time()
    step = StepRecord(job_id="j", rank=3, world_size=8, node="n", step=10, ts=now, loss=2.5)
    records = [
        _batch(),
        step,
        StepBatch(cluster="c", node="n", job_id="j", ts=now, seq=1, agent_id="a", steps=[step]),
        Heartbeat(
            cluster="c",
            node="n",
            ts=now,
            seq=1,
            agent_id="a",
            agent_version="0.1",
            uptime_s=3.0,
            backend="simulated",
            gpu_count=8,
        ),
        Anomaly(cluster="c", entity_kind="gpu", entity="n/0", node="n", gpu_index=0,
                metric="util_gpu_pct", pattern="level_shift", first_seen=now, ts=now, value=3.0,
                baseline=96.0, scale=2.0, score=-46.5, window=60, detector="robust-cusum",
                detector_version="1"),
        Alert(
            alert_id="x",
            fingerprint="f",
            status="firing",
            severity="page",
            check="c",
            summary="s",
            cluster="c",
            ts=now,
            starts_at=now,
            evidence={"loss": 1.0},
        ),
    ]
    for record in records:
        assert RecordDecoder(type(record)).decode(encode(record)) == record


def test_every_record_carries_kind_and_schema_version_on_the_wire():
    doc = msgspec.json.decode(encode(_batch()))
    assert doc["kind"] == "gpu_sample_batch"
    assert doc["schema_version"] == 1


def test_unreported_gpu_fields_stay_off_the_wire_and_decode_as_none():
    wire = encode(_batch())
    assert b"temp_c" not in wire
    assert RecordDecoder(GpuSampleBatch).decode(wire).gpus[0].temp_c is None


def test_unknown_fields_are_ignored_for_forward_compatibility():
    doc = msgspec.json.decode(encode(_batch()))
    doc["added_in_a_later_minor"] = {"x": 1}
    assert RecordDecoder(GpuSampleBatch).decode(msgspec.json.encode(doc)).node == "node-1"


@pytest.mark.parametrize(
    ("payload", "reason", "fragment"),
    [
        (b"\x00\xffgarbage", "not_json", "malformed"),
        (b"[1, 2]", "invalid", "Expected `object`"),
        (b'{"kind": "step"}', "wrong_kind", "'step'"),
        (b'{"kind": "gpu_sample_batch", "schema_version": 2}', "unsupported_version", "2"),
        (None, "not_json", "null"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload, reason, fragment):
    with pytest.raises(RecordError) as info:
        RecordDecoder(GpuSampleBatch).decode(payload)
    assert info.value.reason == reason
    assert fragment in info.value.message


def test_out_of_range_value_names_the_field_path():
    wire = encode(_batch()).replace(b'"util_gpu_pct":97.5', b'"util_gpu_pct":197.5')
    with pytest.raises(RecordError) as info:
        RecordDecoder(GpuSampleBatch).decode(wire)
    assert info.value.reason == "invalid"
    assert "$.gpus[0].util_gpu_pct" in info.value.message


def test_wrong_type_is_rejected_not_coerced():
    wire = encode(_batch()).replace(b'"seq":7', b'"seq":"7"')
    with pytest.raises(RecordError, match=r"\$\.seq"):
        RecordDecoder(GpuSampleBatch).decode(wire)


def test_oversized_message_is_rejected_before_parsing():
    with pytest.raises(RecordError) as info:
        RecordDecoder(GpuSampleBatch).decode(b" " * (MAX_RECORD_BYTES + 1))
    assert info.value.reason == "too_large"


def test_invalid_utf8_inside_a_json_string_is_not_json_not_a_unicode_error():
    # Regression (#13): msgspec raises UnicodeDecodeError (not DecodeError) for it.
    data = encode(_batch(node="node-1")).replace(b'"node-1"', b'"node-\xff\xfe"')
    with pytest.raises(RecordError) as err:
        RecordDecoder(GpuSampleBatch).decode(data)
    assert err.value.reason == "not_json" and "UTF-8" in err.value.message


def test_json_nested_a_thousand_deep_in_an_unknown_field_is_invalid_not_a_recursion_error():
    # Regression (#13): unknown fields are skipped recursively, up to the recursion limit.
    deep = b"[" * 100_000 + b"]" * 100_000
    data = encode(_batch()).replace(b'{"kind"', b'{"junk":' + deep + b',"kind"', 1)
    with pytest.raises(RecordError) as err:
        RecordDecoder(GpuSampleBatch).decode(data)
    assert err.value.reason == "invalid" and "nested" in err.value.message


def test_deep_nesting_in_an_undecodable_message_is_classified_without_recursion_error():
    # A validation failure is explained by a second (envelope) decode: it must not raise.
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecordError) as err:
        RecordDecoder(GpuSampleBatch).decode(b'{"kind":' + deep + b"}")
    assert err.value.reason in ("invalid", "wrong_kind")


_STEP = dict(job_id="job-7", rank=0, world_size=8, node="node-01", step=1, ts=1.0)


@pytest.mark.parametrize("name", [
    "node-01", "gpu-a100.rack3.example.com", "slurm:12345_7", "k8s/ns/pod-0", "a", "user@host",
    "v1+exp", "A" * 256,
])
def test_names_of_hosts_jobs_and_clusters_are_accepted(name):
    step = StepRecord(**{**_STEP, "job_id": name, "node": name})
    batch = StepBatch(cluster=name, node=name, job_id=name, ts=1.0, seq=0, agent_id="a",
                      steps=[step])
    assert RecordDecoder(StepBatch).decode(encode(batch)) == batch


@pytest.mark.parametrize("name", [
    "", "-leading-dash", ".hidden", "has space", "semi;colon", "quote'd", "new\nline",
    "näme", "x" * 257, "a\x00b", "<script>",
])
@pytest.mark.parametrize("field", ["job_id", "node"])
def test_names_outside_the_strict_charset_are_invalid(name, field):
    wire = encode(StepRecord(**{**_STEP, field: name}))
    with pytest.raises(RecordError) as err:
        RecordDecoder(StepRecord).decode(wire)
    assert err.value.reason == "invalid" and field in err.value.message


def test_a_sample_batch_names_its_cluster_node_and_job_in_the_strict_charset():
    for field in ("cluster", "node", "job_id"):
        with pytest.raises(RecordError, match=field):
            RecordDecoder(GpuSampleBatch).decode(encode(_batch(**{field: "bad name"})))


@pytest.mark.parametrize("field", ["param_checksum", "env_fingerprint", "seed_fingerprint"])
def test_hashes_longer_than_128_characters_are_invalid(field):
    ok = StepRecord(**{**_STEP, field: "f" * 128})
    assert RecordDecoder(StepRecord).decode(encode(ok)) == ok
    with pytest.raises(RecordError) as err:
        RecordDecoder(StepRecord).decode(encode(StepRecord(**{**_STEP, field: "f" * 129})))
    assert err.value.reason == "invalid" and field in err.value.message


def test_a_60_kb_checksum_cannot_reach_the_pipeline():
    wire = encode(StepRecord(**{**_STEP, "param_checksum": "0" * 60_000}))
    with pytest.raises(RecordError, match="param_checksum"):
        RecordDecoder(StepRecord).decode(wire)


def test_a_sample_batch_holds_at_most_64_gpus():
    gpus = [GpuSample(index=i) for i in range(65)]
    assert len(RecordDecoder(GpuSampleBatch).decode(encode(_batch(gpus=gpus[:64]))).gpus) == 64
    with pytest.raises(RecordError) as err:
        RecordDecoder(GpuSampleBatch).decode(encode(_batch(gpus=gpus)))
    assert err.value.reason == "invalid" and "gpus" in err.value.message


def test_the_nonfinite_list_is_bounded():
    wire = encode(StepRecord(**{**_STEP, "nonfinite": ["loss"] * 17}))
    with pytest.raises(RecordError, match="nonfinite"):
        RecordDecoder(StepRecord).decode(wire)
