"""Hostile input for every decoder: arbitrary bytes and mutated valid encodings.

Whatever the bytes, a decoder returns a record or raises :class:`RecordError` (the codec,
for every record type and the steps topic's union), or counts a reason (the agent's
datagram intake and the steps-file line parser). The budget is fixed and derandomized so
CI stays fast and a failure reproduces.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.agents.claims import Peer
from trainguard.agents.collectors.steps_file import StepFileTail
from trainguard.agents.intake import StepIntake
from trainguard.agents.reporter import CheckpointReport, StepDatagram
from trainguard.agents.sim import JobSimulator, JobSpec
from trainguard.schemas.codec import RecordDecoder, RecordError, encode
from trainguard.schemas.records import (
    Alert,
    Anomaly,
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Heartbeat,
    StepBatch,
    StepRecord,
)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

RECORD_TYPES: list[Any] = [GpuSampleBatch, StepBatch, StepRecord, CheckpointEvent, Heartbeat,
                           Anomaly, Finding, Alert, StepBatch | StepRecord | CheckpointEvent]
DECODERS = [RecordDecoder(t) for t in RECORD_TYPES]


def _valid_encodings() -> list[bytes]:
    """One or more valid wire records of every kind (the simulator's, and hand-made)."""
    spec = JobSpec(nodes=2, gpus_per_node=2, checkpoint_every=5, checkpoint_pause_s=1,
                   warmup_steps=2)
    emits = JobSimulator(spec, seed=1).run(12)
    seen: dict[type, list[bytes]] = {}
    for e in emits:
        seen.setdefault(type(e.record), []).append(encode(e.record))
    out = [b for blobs in seen.values() for b in blobs[:3]]
    t = 1_800_000_000.0
    out.append(encode(Anomaly(
        cluster="c", entity_kind="gpu", entity="n/0", node="n", gpu_index=0, metric="power_w",
        pattern="spike", first_seen=t, ts=t, value=1.0, baseline=2.0, scale=0.5, score=-3.0,
        window=60, detector="robust-cusum", detector_version="1")))
    out.append(encode(Finding(
        finding_id="f", cluster="c", job_id="j", check="lr_mismatch", category="integrity",
        first_seen=t, ts=t, ranks=[1], nodes=["n"], observed=1.0, expected=2.0,
        summary="s", evidence={"a": 1.0, "b": "x", "c": None}, check_version="1")))
    out.append(encode(Alert(
        alert_id="a", fingerprint="f", status="firing", severity="page", check="x",
        summary="s", cluster="c", ts=t, starts_at=t, labels={"k": "v"})))
    return out


VALID = _valid_encodings()

#: Fragments an attacker would try: broken UTF-8, deep nesting, huge or odd numbers.
HOSTILE = [b"\xff", b"\xc3", b"\xed\xa0\x80", b'"\xff\xfe"', b"[" * 3000, b"{" * 3000,
           b'{"a":' * 2000, b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" * 5000, b"null",
           b'"\\ud800"', b'"\\u0000"', b"\x00", b"-0", b"18446744073709551616",
           b'"kind":"step"', b'"schema_version":99', b",", b"}", b"]", b'"', b"\\"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes flipped, cut, inserted or replaced."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "hostile", "dup"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(at, len(data) - 1)
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "hostile":
            data[at:at + draw(st.integers(0, 8))] = draw(st.sampled_from(HOSTILE))
        else:
            data[at:at] = data[max(0, at - 32):at]
    return bytes(data)


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@st.composite
def field_swapped(draw: st.DrawFn) -> bytes:
    """A valid record with one of its fields (at any depth) replaced by arbitrary JSON."""
    doc = msgspec.json.decode(draw(st.sampled_from(VALID)))
    node: Any = doc
    for _ in range(draw(st.integers(0, 3))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        children = [k for k in keys if isinstance(node[k], dict | list) and node[k]]
        if not children:
            break
        node = node[draw(st.sampled_from(children))]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    if keys:
        node[draw(st.sampled_from(keys))] = draw(_json)
    return json.dumps(doc).encode()


def _decode_all(data: bytes) -> None:
    for decoder in DECODERS:
        try:
            decoder.decode(data)
        except RecordError as exc:
            assert exc.reason in ("too_large", "not_json", "invalid", "wrong_kind",
                                  "unsupported_version")


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_record_error(data: bytes) -> None:
    _decode_all(data)


@FUZZ
@given(mutated())
def test_mutated_encodings_decode_or_raise_record_error(data: bytes) -> None:
    _decode_all(data)


@FUZZ
@given(field_swapped())
def test_records_with_a_field_swapped_for_any_json_decode_or_raise_record_error(
        data: bytes) -> None:
    _decode_all(data)


# -- the agent's decoders (read-only here: agents/ is hardened on its own branch) --------------


def _datagrams() -> list[bytes]:
    spec = JobSpec(nodes=1, gpus_per_node=2, checkpoint_every=3, checkpoint_pause_s=1,
                   warmup_steps=1)
    out: list[bytes] = []
    for e in JobSimulator(spec, seed=2).run(6):
        if isinstance(e.record, StepBatch):
            out += [msgspec.json.encode(StepDatagram(pid=7, dropped=0, step=s))
                    for s in e.record.steps]
    out.append(msgspec.json.encode(StepDatagram(pid=7, dropped=2, nonfinite=["loss"])))
    report = CheckpointReport(job_id="j", rank=0, node="n", step=3, ts=1.0, action="save",
                              checkpoint_id="c", digest="00ff00ff00ff")
    out.append(msgspec.json.encode(StepDatagram(pid=7, dropped=0, checkpoint=report)))
    return out


DATAGRAMS = _datagrams()


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> StepIntake:
    # Not started: the datagram handler is exercised without a socket or thread.
    return StepIntake(tmp_path_factory.mktemp("intake") / "steps.sock")


@st.composite
def datagram(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(DATAGRAMS))
    kind = draw(st.sampled_from(["bytes", "mutated", "valid"]))
    if kind == "bytes":
        return draw(st.binary(max_size=256))
    if kind == "valid":
        return base
    data = bytearray(base)
    at = draw(st.integers(0, len(data)))
    data[at:at + draw(st.integers(0, 8))] = draw(st.sampled_from(HOSTILE))
    return bytes(data)


#: The kernel's credentials of every fuzzed datagram's sender: one process.
_ME = Peer(os.getpid(), os.getuid(), os.getgid())


@FUZZ
@given(datagram(), st.booleans())
def test_intake_datagrams_are_queued_or_counted_never_raised(
        intake: StepIntake, data: bytes, truncated: bool) -> None:
    def seen() -> int:
        return (intake.steps_received + intake.steps_malformed + intake.checkpoints_received
                + intake.bindings.refused)

    before = seen()
    intake._handle_safely(memoryview(data), truncated=truncated, peer=_ME)
    after = seen()
    assert after == before + 1
    intake.drain()
    intake.drain_checkpoints()


@pytest.fixture(scope="module")
def tail(tmp_path_factory: pytest.TempPathFactory) -> StepFileTail:
    path: Path = tmp_path_factory.mktemp("tail") / "steps.jsonl"
    return StepFileTail(path, job_id="j", rank=0, world_size=2, node="n", clock=lambda: 1.0)


def _step_lines() -> list[bytes]:
    step = msgspec.json.decode(DATAGRAMS[0], type=StepDatagram).step
    assert step is not None
    return [encode(step), b'{"step": 3, "loss": NaN, "lr": Infinity}', b'{"step": 4}']


STEP_LINES = _step_lines()


@st.composite
def step_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "mutated", "json"]))
    if kind == "bytes":
        line = draw(st.binary(max_size=256))
    elif kind == "json":
        doc = msgspec.json.decode(STEP_LINES[0])
        doc[draw(st.sampled_from(sorted(doc)))] = draw(_json)
        line = json.dumps(doc).encode()
    else:
        data = bytearray(draw(st.sampled_from(STEP_LINES)))
        at = draw(st.integers(0, len(data)))
        data[at:at + draw(st.integers(0, 8))] = draw(st.sampled_from(HOSTILE))
        line = bytes(data)
    return line.replace(b"\n", b" ").strip()


# Regression (#13 item 1): invalid UTF-8 and deep nesting once escaped the parser.
@settings(FUZZ, report_multiple_bugs=False)
@given(step_line())
def test_steps_file_lines_parse_or_raise_record_error(tail: StepFileTail, line: bytes) -> None:
    try:
        record = tail._decode(line)
    except RecordError:
        return
    assert isinstance(record, StepRecord)
    assert all(v is None or math.isfinite(v) for v in (record.loss, record.lr))
