"""Packed snapshots: lossless (bitwise), old snapshots still load, hostile blobs refused."""

from pathlib import Path

import msgspec
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.agents.collectors import SimulatedGpus
from trainguard.pipeline.baseline_state import read_doc
from trainguard.pipeline.baselines import BaselineConfig, BaselineStage
from trainguard.pipeline.snapshots import StageStates
from trainguard.pipeline.state import encode_arrays
from trainguard.pipeline.state_codec import (
    MAGIC,
    SnapshotError,
    fold_rows,
    pack_arrays,
    unfold_rows,
    unpack_arrays,
)
from trainguard.schemas.records import GpuSampleBatch

T0 = 1_795_000_230.0
BOUND = 1 << 30


def _tick(gpus, ts, node):
    return GpuSampleBatch(cluster="c", node=node, ts=ts, seq=int(ts), agent_id="a",
                          gpus=gpus.collect(ts))


@pytest.fixture(scope="module")
def stage():
    """Rows in alarm (idle GPU), re-learning (throttled for long), warming (a late node)."""
    n1, n2, stage = SimulatedGpus("n1", 8, seed=3), SimulatedGpus("n2", 4, seed=4), BaselineStage()
    for i in range(220):
        if i == 60:
            n1.inject(5, "throttled")
        if i == 190:
            n1.inject(2, "idle")
        batch = [_tick(n1, T0 + i, "n1")] + ([_tick(n2, T0 + i, "n2")] if i >= 205 else [])
        stage.observe(batch, sources=["s:0"] * len(batch))
    return stage


def _old_export(stage, part):
    """Main's export before #17 round 3, kept as the frozen reference."""
    return encode_arrays({"format": 1, "now": stage.now, "gpu": stage.gpus.export(part),
                          "rank": stage.ranks.export(part)})


def _rows_state(stage):
    """Every bank array of every entity, keyed by entity, as raw bytes."""
    out = {}
    fam = stage.gpus
    for key in sorted(fam.meta):
        row = np.array([fam.registry.get(key)], dtype=np.int64)
        out[key] = {m: {f: a.tobytes() for f, a in bank.state_rows(row).items()}
                    for m, bank in fam.banks.items()}
    return out


def test_the_fixture_holds_rows_whose_recent_window_differs_and_rows_where_it_does_not(stage):
    banks = stage.gpus.export("s:0")["banks"]
    folded = [fold_rows(b, "recent.buf", "window.buf") for b in banks.values()]
    same = np.concatenate([np.unpackbits(f["recent.buf.same"], count=len(b["window.buf"]))
                           for f, b in zip(folded, banks.values(), strict=True)])
    assert same.any() and not same.all()
    counts = np.concatenate([b["window.count"] for b in banks.values()])
    assert (counts < 60).any() and (counts == 60).any()  # warming rows and full ones


def test_a_packed_snapshot_restores_every_array_bitwise(stage):
    blob = stage.export("s:0")
    assert blob.startswith(MAGIC) and len(blob) < len(_old_export(stage, "s:0")) / 2
    fresh = BaselineStage()
    assert fresh.load("s:0", blob) == len(stage.gpus.meta)
    assert _rows_state(fresh) == _rows_state(stage)
    assert fresh.gpus.meta == stage.gpus.meta and fresh.now == stage.now


def test_a_snapshot_in_mains_old_format_still_loads_to_the_same_state(stage):
    old, new = BaselineStage(), BaselineStage()
    old.load("s:0", _old_export(stage, "s:0"))
    new.load("s:0", stage.export("s:0"))
    assert _rows_state(old) == _rows_state(new) == _rows_state(stage)


def test_a_snapshot_written_by_main_86ef08a_loads_to_the_state_this_code_builds(stage):
    """The blob was written by main (86ef08a) from the very feed of the ``stage`` fixture."""
    blob = (Path(__file__).parent / "data" / "baselines_snapshot_main_86ef08a.bin").read_bytes()
    fresh = BaselineStage()
    states = StageStates(baselines=fresh)
    assert states.load("s:0", blob) == len(stage.gpus.meta) == 12
    assert states.rejected == {"baselines": 0}
    assert _rows_state(fresh) == _rows_state(stage)


def test_fold_keeps_nan_payloads_and_signed_zeros_bitwise():
    window = np.full((4, 3), np.nan)
    window[0] = [0.0, 1.5, np.inf]
    window[1, 0] = 0.0
    recent = window.copy()
    recent[1, 0] = -0.0
    recent[2] = np.frombuffer(np.uint64(0x7FF8000000000001).tobytes() * 3, dtype=np.float64)
    doc = fold_rows({"window.buf": window, "recent.buf": recent}, "recent.buf", "window.buf")
    assert len(doc["recent.buf.rest"]) == 2  # rows 1 and 2 differ bit for bit
    back = unfold_rows(doc, "recent.buf", "window.buf")
    assert back["recent.buf"].tobytes() == recent.tobytes()


def test_arrays_of_every_kind_round_trip_bitwise():
    doc = {"f": np.array([[np.nan, -0.0], [np.inf, 1e-310]]), "i": np.arange(-3, 3),
           "b": np.array([True, False]), "u8": np.array([255], dtype=np.uint8),
           "empty": np.zeros((0, 60)), "scalar": np.array(2), "s": np.array(["a/0", "b"]),
           "nested": {"x": np.ones(3, np.float32)},
           "meta": [{"job": "j"}], "now": 5.0}
    back = unpack_arrays(pack_arrays(doc), BOUND)
    for key in ("f", "i", "b", "u8", "empty", "scalar"):
        assert back[key].dtype == doc[key].dtype and back[key].shape == doc[key].shape
        assert back[key].tobytes() == doc[key].tobytes()
    assert back["s"].tolist() == ["a/0", "b"] and back["meta"] == [{"job": "j"}]
    assert back["nested"]["x"].tobytes() == doc["nested"]["x"].tobytes()
    assert back["now"] == 5.0


def _counted_refusal(blob):
    """Load ``blob`` as a baselines blob through StageStates: (entities, rejected)."""
    states = StageStates(baselines=BaselineStage())
    return states.load("s:0", blob), states.rejected["baselines"]


def test_a_truncated_snapshot_is_refused_and_counted(stage):
    blob = stage.export("s:0")
    with pytest.raises(SnapshotError):
        read_doc(blob[:len(blob) // 2], BOUND)
    assert _counted_refusal(blob[:len(blob) // 2]) == (0, 1)


def test_a_damaged_snapshot_is_refused_by_its_checksum_and_counted(stage):
    blob = bytearray(stage.export("s:0"))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(SnapshotError):
        read_doc(bytes(blob), BOUND)
    assert _counted_refusal(bytes(blob)) == (0, 1)


@pytest.mark.parametrize("declare_size", [True, False])
def test_a_snapshot_inflating_past_its_bound_is_refused(declare_size):
    zeros = b"\0" * (8 << 20)
    frame = zstandard.ZstdCompressor(write_content_size=declare_size).compress(zeros)
    with pytest.raises(SnapshotError, match="over|past"):
        unpack_arrays(MAGIC + frame, 1 << 20)


def test_a_bomb_costs_the_baselines_their_partition_not_the_worker():
    # The bound: every family full (max_entities) in one partition, ~1.3 MB here.
    stage = BaselineStage(BaselineConfig(max_entities=10))
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (64 << 20))
    states = StageStates(baselines=stage)
    assert states.load("s:0", MAGIC + frame) == 0
    assert states.rejected["baselines"] == 1 and stage.partitions() == set()


@pytest.mark.parametrize("leaf", [["|O8", [1], False], ["<f8", [-1], True], ["<f8", [10**9], True],
                                  ["V8", [1], False], "x", ["<f8"]])
def test_an_array_header_that_does_not_fit_its_bytes_is_refused(leaf):
    blob = pack_arrays({"x": np.zeros(1)})
    raw = zstandard.ZstdDecompressor().decompress(blob[len(MAGIC):])
    header = msgspec.msgpack.encode({"x": {"__a__": leaf}})
    forged = len(header).to_bytes(4, "little") + header + raw[-8:]
    with pytest.raises(SnapshotError):
        unpack_arrays(MAGIC + zstandard.ZstdCompressor().compress(forged), BOUND)


def test_bytes_no_array_header_names_are_refused():
    blob = pack_arrays({"x": np.zeros(2)})
    raw = zstandard.ZstdDecompressor().decompress(blob[len(MAGIC):])
    with pytest.raises(SnapshotError, match="does not name"):
        unpack_arrays(MAGIC + zstandard.ZstdCompressor().compress(raw + b"extra"), BOUND)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_after_the_magic_only_ever_raise_snapshot_errors(data):
    with pytest.raises((SnapshotError, ValueError)):
        read_doc(MAGIC + data, 1 << 20)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_packed_blob_with_random_damage_is_refused_or_loads_whole(stage, data):
    blob = bytearray(stage.export("s:0"))
    i = data.draw(st.integers(len(MAGIC), len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    states = StageStates(baselines=BaselineStage())
    states.load("s:0", bytes(blob))  # never raises
    assert states.rejected["baselines"] in (0, 1)


def test_a_written_round_packs_off_the_loop_and_reassembles_to_the_same_state(stage):
    from tests.pipeline.fakes import Clock, FakeTopic, run
    from trainguard.pipeline.snapshots import StateSnapshots
    from trainguard.pipeline.state import _assemble, _Chunk

    topic, clock = FakeTopic(), Clock()
    snaps = StateSnapshots(StageStates(baselines=stage), topic, inputs=["s"], every_s=5.0,
                           read=lambda keys: {}, clock=clock, generation=lambda: 1)
    sent = run(snaps.write())
    assert sent == len(topic.sent) >= 1
    chunks = {s.key.decode().rpartition("#")[2]: msgspec.msgpack.decode(s.value, type=_Chunk)
              for s in topic.sent}
    fresh = BaselineStage()
    states = StageStates(baselines=fresh)
    assert states.load("s:0", _assemble(chunks)) == len(stage.gpus.meta)
    assert _rows_state(fresh) == _rows_state(stage) and states.rejected["baselines"] == 0


_DTYPES = st.sampled_from(["<f8", "<f4", "<i8", "<i4", "|u1", "|b1"])


@st.composite
def _arrays(draw):
    dtype = np.dtype(draw(_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
    raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize,
                         max_size=int(np.prod(shape)) * dtype.itemsize))
    if dtype.kind == "b":
        return np.frombuffer(bytes(b & 1 for b in raw), dtype=dtype).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)  # any bits: NaN payloads, ±inf


_KEYS = st.text(max_size=5).filter(lambda k: k not in ("__a__", "__str__"))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_KEYS, _arrays(), max_size=6))
def test_any_arrays_round_trip_bit_for_bit(doc):
    back = unpack_arrays(pack_arrays({"d": doc}), BOUND)["d"]
    assert set(back) == set(doc)
    for key, array in doc.items():
        assert back[key].dtype == array.dtype and back[key].shape == array.shape
        assert back[key].tobytes() == array.tobytes()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 40), st.data())
def test_any_recent_window_folds_and_unfolds_bit_for_bit(rows, data):
    window = np.frombuffer(data.draw(st.binary(min_size=rows * 24, max_size=rows * 24)),
                           dtype=np.float64).reshape(rows, 3)
    recent = window.copy()
    for r in data.draw(st.lists(st.integers(0, max(rows - 1, 0)), max_size=rows)):
        recent[r, r % 3] = data.draw(st.sampled_from([np.nan, -0.0, 0.0, np.inf, 1.0]))
    doc = fold_rows({"window.buf": window, "recent.buf": recent}, "recent.buf", "window.buf")
    packed = unpack_arrays(pack_arrays(doc), BOUND)
    back = unfold_rows(packed, "recent.buf", "window.buf")
    assert back["recent.buf"].tobytes() == recent.tobytes()
    assert back["window.buf"].tobytes() == window.tobytes()


@pytest.mark.parametrize("key", ["__a__", "__str__"])
def test_a_dict_with_a_key_that_marks_arrays_is_refused_not_misread(key):
    # Found by the property test above: {"__a__": array(0.)} packed, then read back as
    # an array header and refused. No snapshot of the worker has such a key (they are
    # the code's names); a caller that made one is told when packing.
    with pytest.raises(SnapshotError, match="marks arrays"):
        pack_arrays({"d": {key: np.zeros(1)}})
