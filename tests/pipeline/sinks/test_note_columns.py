"""The compiled column kernels give the numpy path's columns, and hand back what they do not
read so that the numpy path raises its own error."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from trainguard.pipeline.sinks import record_pack
from trainguard.pipeline.sinks.msgpack_notes import (
    BIG,
    FLOAT,
    MISSING,
    NEG,
    NIL,
    SINGLE,
    STR,
    UINT,
)
from trainguard.pipeline.sinks.note_columns import OTHER_PATH, float_values, uint_values

pytestmark = pytest.mark.skipif(not record_pack.AVAILABLE, reason="numba not installed")

UINTS = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def _numpy_path(kind: np.ndarray, val: np.ndarray, typ: pa.DataType,
                monkeypatch: pytest.MonkeyPatch) -> pa.Array:
    with monkeypatch.context() as m:
        m.setattr(record_pack, "AVAILABLE", False)
        return record_pack._column(np.zeros(1, np.uint8), kind, val, np.zeros_like(val), typ)


def _compiled_path(kind: np.ndarray, val: np.ndarray, typ: pa.DataType) -> pa.Array:
    got = record_pack._compiled(kind, val, typ)
    assert got is not None, "the kernel handed notes it reads to the numpy path"
    assert got.equals(record_pack._column(np.zeros(1, np.uint8), kind, val, val, typ))
    return got


@pytest.mark.parametrize("seed", range(5))
def test_floats_match_the_numpy_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    n = 2_000
    floats = rng.normal(0, 1e6, n)
    floats[rng.integers(0, n, 40)] = np.nan
    floats[rng.integers(0, n, 40)] = np.inf
    floats[rng.integers(0, n, 40)] = -np.inf
    kind = rng.choice(np.array([FLOAT, UINT, BIG, MISSING, NIL], np.uint8), n,
                      p=[0.7, 0.1, 0.05, 0.1, 0.05])
    val = floats.view(np.uint64).copy()
    ints = kind != FLOAT
    val[ints] = rng.integers(0, 2**64 - 1, int(ints.sum()), dtype=np.uint64, endpoint=True)
    got = _compiled_path(kind, val, pa.float64())
    want = _numpy_path(kind, val, pa.float64(), monkeypatch)
    assert got.null_count == want.null_count > 0
    assert got.to_pylist() == want.to_pylist()


@pytest.mark.parametrize("typ", UINTS)
def test_unsigned_columns_match_the_numpy_path(typ: pa.DataType,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(typ.bit_width)
    n = 2_000
    top = 2**typ.bit_width - 1
    val = rng.integers(0, top, n, dtype=np.uint64, endpoint=True)
    val[:3] = [0, top, top - 1]
    kind = rng.choice(np.array([UINT, MISSING, NIL], np.uint8), n, p=[0.8, 0.1, 0.1])
    kind[:3] = UINT
    kind[val >= 2**63] = BIG
    got = _compiled_path(kind, val, typ)
    assert got.type == typ
    assert got.to_pylist() == _numpy_path(kind, val, typ, monkeypatch).to_pylist()
    assert got.to_pylist()[:3] == [0, top, top - 1]


def test_all_valid_columns_carry_no_validity_bitmap() -> None:
    kind = np.full(100, FLOAT, np.uint8)
    val = np.arange(100, dtype=np.float64).view(np.uint64)
    got = _compiled_path(kind, val, pa.float64())
    assert got.buffers()[0] is None and got.null_count == 0


@pytest.mark.parametrize("other", [NEG, SINGLE, STR])
def test_a_float_note_it_does_not_read_goes_to_the_numpy_path(other: int) -> None:
    kind = np.array([FLOAT, other, FLOAT], np.uint8)
    out = np.empty(3, np.float64)
    assert float_values(kind, np.zeros(3, np.uint64), np.zeros(3), out,
                        np.empty(3, np.bool_)) == OTHER_PATH
    assert record_pack._compiled(kind, np.zeros(3, np.uint64), pa.float64()) is None


@pytest.mark.parametrize("typ", UINTS[:3])
def test_a_value_over_its_width_goes_to_the_numpy_path_which_raises(typ: pa.DataType) -> None:
    top = 2**typ.bit_width - 1
    kind = np.array([UINT, UINT], np.uint8)
    val = np.array([top, top + 1], np.uint64)
    dtype = np.dtype(f"uint{typ.bit_width}")
    assert uint_values(kind, val, np.uint64(top), np.empty(2, dtype),
                       np.empty(2, np.bool_)) == OTHER_PATH
    with pytest.raises(ValueError):
        record_pack._column(np.zeros(1, np.uint8), kind, val, val, typ)


def test_a_negative_or_float_value_in_an_unsigned_column_raises() -> None:
    for other in (NEG, FLOAT):
        kind = np.array([UINT, other], np.uint8)
        with pytest.raises(ValueError, match="msgpack type"):
            record_pack._column(np.zeros(1, np.uint8), kind, np.zeros(2, np.uint64),
                                np.zeros(2, np.int64), pa.uint32())
