"""The msgpack kernel reads every msgpack type to its end, types each column as Arrow would,
and raises (never reads past the bytes) on anything else."""

from __future__ import annotations

import re
import struct

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from trainguard.pipeline.sinks.record_pack import AVAILABLE, PackSpec, read_packed

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba not installed")

SPEC = PackSpec(
    top=(("name", pa.string()), ("n", pa.uint64()), ("x", pa.float64()), ("ok", pa.bool_()),
         ("s", pa.int32())),
    items="rows",
    element=(("v", pa.float64()), ("i", pa.uint16()), ("t", pa.string())),
    counted=("extra",), element_counted=("sub",))


def _read(records: list[dict]) -> object:
    body = msgspec.msgpack.encode(records)
    return read_packed(body, len(records), sum(len(r.get("rows") or []) for r in records), SPEC)


def test_fields_in_any_order_missing_or_nil_read_as_null_and_unknown_ones_are_skipped() -> None:
    got = _read([
        {"rows": [{"t": "a", "v": 1.5, "zz": {"deep": [1, [2, {"k": b"bin"}]]}, "i": 7}],
         "name": "n0", "unknown": [1, 2, 3], "n": 2**64 - 1, "x": None, "ok": True, "s": -5},
        {"name": None, "rows": [], "extra": [1, 2]},
        {"n": 0, "rows": [{"i": 65535, "sub": {"a": 1, "b": 2}}, {"v": -0.0, "sub": [9]}]},
    ])
    assert got.head["name"].to_pylist() == ["n0", None, None]
    assert got.head["n"].to_pylist() == [2**64 - 1, None, 0]
    assert got.head["x"].to_pylist() == [None, None, None]
    assert got.head["ok"].to_pylist() == [True, None, None]
    assert got.head["s"].to_pylist() == [-5, None, None]
    assert got.lengths["rows"].tolist() == [1, 0, 2] and got.lengths["extra"].tolist() == [0, 2, 0]
    assert got.owner.tolist() == [0, 2, 2]
    assert got.fields["v"].to_pylist() == [1.5, None, -0.0]
    assert got.fields["i"].to_pylist() == [7, 65535, None]
    assert got.fields["t"].to_pylist() == ["a", None, None]
    assert got.element_lengths["sub"].tolist() == [0, 2, 1]
    assert got.head["s"].type == pa.int32() and got.fields["i"].type == pa.uint16()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
                                   2**63 - 1, 2**63, 2**64 - 1])
def test_every_unsigned_width_reads_exactly(value: int) -> None:
    assert _read([{"n": value}]).head["n"].to_pylist() == [value]


@pytest.mark.parametrize("value", [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), 5])
def test_every_signed_width_reads_exactly(value: int) -> None:
    got = _read([{"s": value, "x": value}])
    assert got.head["s"].to_pylist() == [value]
    assert got.head["x"].to_pylist() == [float(value)]  # an integer in a float column


@pytest.mark.parametrize("value", [-(2**31) - 1, -(2**63), 2**64 - 1])
def test_wide_integers_in_a_float_column_read_as_python_would_convert_them(value: int) -> None:
    assert _read([{"x": value}]).head["x"].to_pylist() == [float(value)]


@pytest.mark.parametrize("text", ["", "é" * 15, "x" * 31, "y" * 32, "z" * 255, "w" * 70_000])
def test_texts_of_every_header_width(text: str) -> None:
    got = _read([{"name": text, "rows": [{"t": text}]}])
    assert got.head["name"].to_pylist() == [text] and got.fields["t"].to_pylist() == [text]


def test_a_float32_is_widened_and_non_finite_floats_are_null() -> None:
    # msgspec writes float64 only; a float32 (0xca) is built by hand.
    one = b"\x91\x81\xa1x\xca" + struct.pack(">f", 0.25)
    assert read_packed(one, 1, 0, SPEC).head["x"].to_pylist() == [0.25]
    got = _read([{"x": float("nan")}, {"x": float("inf")}, {"x": -1e308}])
    assert got.head["x"].to_pylist() == [None, None, -1e308]


def test_long_lists_and_maps_use_their_wider_headers() -> None:
    rows = [{"i": k % 60_000, "sub": {str(j): j for j in range(20)}} for k in range(70_000)]
    got = _read([{"rows": rows, "extra": list(range(20))}])
    assert got.lengths["rows"].tolist() == [70_000] and got.lengths["extra"].tolist() == [20]
    assert np.array_equal(got.fields["i"].to_numpy(), np.arange(70_000) % 60_000)
    assert set(got.element_lengths["sub"].tolist()) == {20}


@pytest.mark.parametrize(("record", "column"), [
    ({"n": -1}, "'n' (uint64)"), ({"s": 2**40}, "'s' (int32)"), ({"s": 2**63}, "'s'"),
    ({"name": 5}, "'name' (string)"), ({"x": "1.0"}, "'x' (double)"), ({"ok": 1}, "'ok'"),
    ({"rows": [{"i": 70_000}]}, "'i' (uint16)"), ({"extra": 3}, "extra"),
    ({"n": [1]}, "'n'"),
])
def test_a_value_its_column_cannot_hold_raises(record: dict, column: str) -> None:
    with pytest.raises(ValueError, match=re.escape(column)):
        _read([record])


@pytest.mark.parametrize("cut", [1, 2, 5, 9, 20, 30, -1])
def test_truncated_bytes_raise_instead_of_reading_past_them(cut: int) -> None:
    body = msgspec.msgpack.encode([{"name": "abcdef", "rows": [{"v": 1.0, "t": "xyz"}],
                                    "n": 2**40}])
    with pytest.raises(ValueError, match="msgpack|records|elements"):
        read_packed(body[:cut], 1, 1, SPEC)


def test_counts_that_differ_from_the_bytes_raise() -> None:
    body = msgspec.msgpack.encode([{"rows": [{}, {}]}])
    with pytest.raises(ValueError, match="more elements"):
        read_packed(body, 1, 1, SPEC)
    with pytest.raises(ValueError, match="1 elements read where 3"):
        read_packed(msgspec.msgpack.encode([{"rows": [{}]}]), 1, 3, SPEC)
    with pytest.raises(ValueError, match="list of records"):
        read_packed(body, 2, 2, SPEC)
    with pytest.raises(ValueError, match="do not end"):
        read_packed(body + b"\xc0", 1, 2, SPEC)


def test_bin_and_ext_values_are_skipped() -> None:
    ext = msgspec.msgpack.Ext(5, b"1234567890")
    for value in (b"raw", b"r" * 300, ext, msgspec.msgpack.Ext(1, b"1234")):
        got = _read([{"blob": value, "n": 3, "rows": [{"q": value, "i": 2}]}])
        assert got.head["n"].to_pylist() == [3] and got.fields["i"].to_pylist() == [2]


def test_a_text_past_the_bytes_raises_instead_of_being_read() -> None:
    from trainguard.pipeline.sinks.msgpack_notes import gather

    body = np.frombuffer(b"abcdef", np.uint8)
    offsets, data = gather(body, np.array([1], np.int64), np.array([3], np.int64),
                           np.array([True]))
    assert bytes(data) == b"bcd" and offsets.tolist() == [0, 3]
    with pytest.raises(ValueError):
        gather(body, np.array([4], np.int64), np.array([5], np.int64), np.array([True]))
