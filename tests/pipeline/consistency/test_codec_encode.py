"""The consistency codec after #17 round 3 writes the very bytes main's did (frozen copy)."""

from __future__ import annotations

import collections
from typing import Any

import msgspec
import numpy as np

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
    _SCALAR,
    _SCALARS,
    _SET,
    _STRUCT,
    _TUPLE,
    StateError,
    _attrs,
    _name,
    encode_state,
)


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


def test_every_jobs_state_encodes_to_mains_bytes() -> None:
    stage = _two_jobs()
    for job_id, job in stage.jobs.items():
        state = [job_id, stage.owned_by_steps(job_id), job,
                 stage.silence.saved(job_id), stage.clock_saved(job_id)]
        assert encode_state(state, stage.config) == _main_encode(state, stage.config)


def test_containers_of_every_kind_encode_to_mains_bytes() -> None:
    shared = [1, 2.5, None]
    value = {"t": (1, "a", shared), "s": {3}, "f": frozenset({4}), "l": [shared, shared],
             "d": collections.deque([1, (2,)], maxlen=4), "o": collections.OrderedDict(a=1),
             "b": b"x", "a": np.arange(3.0), "g": np.float32(1.5), "c": True}
    assert encode_state(value, None) == _main_encode(value, None)
