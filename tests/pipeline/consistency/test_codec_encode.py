"""The consistency codec against a frozen copy of main's encoder (as of #17 round 3).

Since round 13 a wire record is written whole (``_RECORD``) instead of field by field
(``_STRUCT``): everything else is still main's bytes, and a blob main wrote still loads.
"""

from __future__ import annotations

import collections
from typing import Any

import msgspec
import numpy as np
import pytest

from tests.pipeline.consistency.test_handoff_export import _two_jobs
from trainguard.pipeline.consistency import codec
from trainguard.pipeline.consistency.codec import (
    _ARRAY,
    _ARRAY_KINDS,
    _BYTES,
    _CONFIG,
    _DEQUE,
    _DICT,
    _FROZEN,
    _LIST,
    _OBJ,
    _ODICT,
    _RECORD,
    _SCALAR,
    _SCALARS,
    _SET,
    _STRUCT,
    _TUPLE,
    StateError,
    _attrs,
    _name,
    decode_state,
    encode_state,
)
from trainguard.schemas.records import StepRecord


class _MainEncoder(codec._Encoder):
    """codec._Encoder.enc as main had it (one call per value), frozen."""

    def enc(self, value: Any) -> Any:  # noqa: C901 - one branch per supported type
        kind = type(value)
        if kind in _SCALARS:
            return value
        if value is self._config:
            return [_CONFIG]
        if kind is tuple:
            return [_TUPLE, [self.enc(v) for v in value]]
        if kind is frozenset:
            return [_FROZEN, [self.enc(v) for v in value]]
        if kind is bytes:
            return [_BYTES, value]
        if isinstance(value, np.generic):
            return [_SCALAR, value.dtype.str, value.tobytes()]
        ref = self._ref(value)
        if ref is not None:
            return ref
        if kind is list:
            return [_LIST, [self.enc(v) for v in value]]
        if kind is set:
            return [_SET, [self.enc(v) for v in value]]
        if kind in (dict, collections.OrderedDict):
            flat = [self.enc(x) for kv in value.items() for x in kv]
            return [_DICT if kind is dict else _ODICT, flat]
        if kind is collections.deque:
            return [_DEQUE, value.maxlen, [self.enc(v) for v in value]]
        if kind is np.ndarray:
            if value.dtype.kind not in _ARRAY_KINDS:
                raise StateError(f"array of dtype {value.dtype} cannot be saved")
            arr = np.ascontiguousarray(value)
            return [_ARRAY, arr.dtype.str, list(arr.shape), arr.tobytes()]
        name = _name(kind)
        if self._classes.get(name) is not kind:
            raise StateError(f"{name} is not a state class that can be saved")
        if isinstance(value, msgspec.Struct):
            fields = {f: self.enc(getattr(value, f)) for f in value.__struct_fields__}
            return [_STRUCT, name, fields]
        return [_OBJ, name, {k: self.enc(v) for k, v in _attrs(value).items()}]


def _main_encode(value: Any, config: object) -> bytes:
    return msgspec.msgpack.encode(_MainEncoder(config).enc(value))


def _states() -> list[tuple[list[Any], object]]:
    stage = _two_jobs()
    return [([job_id, stage.owned_by_steps(job_id), job, stage.silence.saved(job_id),
              stage.clock_saved(job_id)], stage.config) for job_id, job in stage.jobs.items()]


def _tags(tree: Any, out: collections.Counter[Any]) -> collections.Counter[Any]:
    """How often each tag, and each ``(tag, class)`` of a struct or record, is in a raw blob."""
    if isinstance(tree, list) and tree and isinstance(tree[0], int):
        out[tree[0]] += 1
        if tree[0] in (_RECORD, _STRUCT):
            out[tree[0], tree[1]] += 1
        if tree[0] == _RECORD:
            return out
    for item in tree.values() if isinstance(tree, dict) else (
            tree if isinstance(tree, list) else ()):
        _tags(item, out)
    return out


def test_step_records_are_written_whole_and_read_back_equal() -> None:
    for state, config in _states():
        blob = encode_state(state, config)
        tags = _tags(msgspec.msgpack.decode(blob), collections.Counter())
        assert tags[_RECORD, _name(StepRecord)] > 0  # the open steps' records
        # Field by field: only the consistency stage's own structs, no wire record.
        assert not [key for key in tags if isinstance(key, tuple) and key[0] == _STRUCT
                    and key[1] in codec._wire()]
        # Read back, it writes the same bytes: every record and reference where it was.
        assert encode_state(decode_state(blob, config), config) == blob


def test_a_blob_main_wrote_field_by_field_loads_to_the_same_state() -> None:
    for state, config in _states():
        old = _main_encode(state, config)
        assert old != encode_state(state, config)  # the records were _STRUCT there
        assert encode_state(decode_state(old, config), config) == encode_state(state, config)


def _with_record(fields: dict[str, Any], name: str = _name(StepRecord)) -> bytes:
    return msgspec.msgpack.encode([_LIST, [[_RECORD, name, fields]]])


def test_a_record_that_breaks_its_types_bounds_is_damage() -> None:
    good = msgspec.to_builtins(StepRecord(job_id="j", rank=1, world_size=2, node="n", step=3,
                                          ts=4.0))
    assert decode_state(_with_record(good), None)[0].rank == 1
    for bad in ({**good, "rank": -1}, {**good, "world_size": 0}, {**good, "step": "3"},
                {k: v for k, v in good.items() if k != "node"}):
        with pytest.raises(StateError, match="StepRecord in state blob"):
            decode_state(_with_record(bad), None)


def test_only_wire_records_are_read_whole() -> None:
    good = msgspec.to_builtins(StepRecord(job_id="j", rank=1, world_size=2, node="n", step=3,
                                          ts=4.0))
    for name in ("trainguard.pipeline.consistency.findings.FindingTracker", "os.system",
                 "builtins.dict"):
        with pytest.raises(StateError, match="not a wire record type"):
            decode_state(_with_record(good, name), None)
    with pytest.raises(StateError, match="not a wire record type"):
        decode_state(msgspec.msgpack.encode([_RECORD, _name(StepRecord)]), None)


def test_containers_of_every_kind_encode_to_mains_bytes() -> None:
    shared = [1, 2.5, None]
    value = {"t": (1, "a", shared), "s": {3}, "f": frozenset({4}), "l": [shared, shared],
             "d": collections.deque([1, (2,)], maxlen=4), "o": collections.OrderedDict(a=1),
             "b": b"x", "a": np.arange(3.0), "g": np.float32(1.5), "c": True}
    assert encode_state(value, None) == _main_encode(value, None)
