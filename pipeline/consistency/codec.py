"""A safe, versioned byte form of the consistency stage's per-job state (no pickle).

A job's state is a graph of small objects (:class:`~.job.JobState` and the watches it
owns: dataclasses, ``__slots__`` classes, numpy arrays, deques, msgspec records). This
module writes such a graph as msgpack of tagged values and reads it back, instantiating
**only** the classes of :data:`ALLOWED` (the consistency package's own classes and the
wire records) without running their constructors or any other code they name. A blob is
input that may be damaged: anything unexpected (an unknown tag or class, a reference to
nowhere, an object dtype) raises :class:`StateError`, which the caller counts.

Objects seen twice (a step record both in an open step and in a watch's memory) are
written once and referenced after, so sharing survives the round trip. The wire records
the stage holds as received (the step records of its open steps: most of a job's state)
are written whole by msgspec instead of field by field in Python, and read back through
msgspec's checks of their type (a value out of its bounds is damage too). The stage's own
:class:`~.config.ConsistencyConfig` is written as a marker and restored as the loading
stage's config (a different config makes the blob incompatible: see
:func:`layout_fingerprint`).
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np

from trainguard.errors import TrainguardError

__all__ = ["ALLOWED", "StateError", "decode_state", "encode_state", "layout_fingerprint"]


class StateError(TrainguardError):
    """A state blob that cannot be written or read back (damaged, foreign, unsupported)."""


# Tags: every msgpack array in the stream is one of these forms; scalars travel as is.
_REF, _LIST, _TUPLE, _SET, _FROZEN, _DICT, _DEQUE, _ODICT = range(8)
_BYTES, _ARRAY, _SCALAR, _OBJ, _STRUCT, _CONFIG, _RECORD = range(8, 15)
_SCALARS = (type(None), bool, int, float, str)
#: Plain numeric/bool/unicode arrays only: an object array could hold anything.
_ARRAY_KINDS = frozenset("biufU")
_PENDING = object()


def _allowed() -> dict[str, type]:
    """Classes a blob may name: the consistency package's and the wire records'."""
    import trainguard.pipeline.consistency as package
    from trainguard.schemas import ranks, records

    modules = [importlib.import_module(f"{package.__name__}.{m.name}")
               for m in pkgutil.iter_modules(package.__path__)]
    out: dict[str, type] = {}
    for mod in [*modules, ranks, records]:
        for value in vars(mod).values():
            if isinstance(value, type) and value.__module__ == mod.__name__:
                out[f"{value.__module__}.{value.__qualname__}"] = value
    out.pop("trainguard.pipeline.consistency.stage.ConsistencyStage", None)
    return out


ALLOWED: dict[str, type] = {}
#: The wire records the stage holds as ingest decoded them, written whole (``_RECORD``):
#: msgspec reads back exactly the values it decoded from the message. Records the worker
#: makes itself (findings) stay field by field: an int where their type says float would
#: come back a float.
_RECEIVED = frozenset(f"trainguard.schemas.{name}" for name in (
    "records.StepRecord", "records.CheckpointEvent", "records.WitnessReport",
    "records.RankClaim", "ranks.RankEvent", "ranks.EnvManifest"))
_WIRE: dict[str, type] = {}


def _classes() -> dict[str, type]:
    if not ALLOWED:  # lazily: the package imports this module
        ALLOWED.update(_allowed())
    return ALLOWED


def _wire() -> dict[str, type]:
    """The classes written whole (:data:`_RECEIVED`), by name."""
    if not _WIRE:
        _WIRE.update({name: _classes()[name] for name in _RECEIVED})
    return _WIRE


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _attrs(obj: object) -> dict[str, Any]:
    """An object's attributes: its ``__dict__`` and the ``__slots__`` it has set."""
    out = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                out[slot] = getattr(obj, slot)
    return out


class _Encoder:
    def __init__(self, config: object) -> None:
        self._config = config
        self._memo: dict[int, int] = {}
        self._classes = _classes()
        self._records = {cls: name for name, cls in _wire().items()}

    def _ref(self, value: object) -> list[Any] | None:
        idx = self._memo.get(id(value))
        if idx is not None:
            return [_REF, idx]
        self._memo[id(value)] = len(self._memo)
        return None

    def enc(self, value: Any) -> Any:  # noqa: C901 - one branch per supported type
        kind = type(value)
        if kind in _SCALARS:
            return value
        if value is self._config:
            return [_CONFIG]
        if kind is tuple:
            return [_TUPLE, self._items(value)]
        if kind is frozenset:
            return [_FROZEN, self._items(value)]
        if kind is bytes:
            return [_BYTES, value]
        if isinstance(value, np.generic):
            return [_SCALAR, value.dtype.str, value.tobytes()]
        ref = self._ref(value)
        if ref is not None:
            return ref
        if kind is list:
            return [_LIST, self._items(value)]
        record = self._records.get(kind)
        if record is not None:  # msgspec writes it when the whole graph is encoded
            return [_RECORD, record, value]
        if kind is set:
            return [_SET, self._items(value)]
        if kind in (dict, collections.OrderedDict):
            flat = self._items([x for kv in value.items() for x in kv])
            return [_DICT if kind is dict else _ODICT, flat]
        if kind is collections.deque:
            return [_DEQUE, value.maxlen, self._items(value)]
        if kind is np.ndarray:
            if value.dtype.kind not in _ARRAY_KINDS:
                raise StateError(f"array of dtype {value.dtype} cannot be saved")
            arr = np.ascontiguousarray(value)
            return [_ARRAY, arr.dtype.str, list(arr.shape), arr.tobytes()]
        name = _name(kind)
        if self._classes.get(name) is not kind:
            raise StateError(f"{name} is not a state class that can be saved")
        if isinstance(value, msgspec.Struct):
            names, values = value.__struct_fields__, msgspec.structs.astuple(value)
            return [_STRUCT, name, dict(zip(names, self._items(values), strict=True))]
        attrs = _attrs(value)
        return [_OBJ, name, dict(zip(attrs, self._items(attrs.values()), strict=True))]

    def _items(self, values: Iterable[Any]) -> list[Any]:
        """:meth:`enc` of each value; scalars (most of them) without the call."""
        enc, scalars = self.enc, _SCALARS
        return [v if type(v) in scalars else enc(v) for v in values]


class _Decoder:
    def __init__(self, config: object) -> None:
        self._config = config
        self._memo: list[Any] = []
        self._classes = _classes()

    def _keep(self, value: Any) -> Any:
        self._memo.append(value)
        return value

    def dec(self, value: Any) -> Any:  # noqa: C901 - one branch per tag
        if not isinstance(value, list):
            if isinstance(value, dict | bytes):
                raise StateError("untagged container in state blob")
            return value
        if not value or not isinstance(value[0], int):
            raise StateError("malformed tagged value in state blob")
        tag = value[0]
        if tag == _REF:
            if not 0 <= value[1] < len(self._memo) or self._memo[value[1]] is _PENDING:
                raise StateError(f"reference {value[1]!r} to nothing in state blob")
            return self._memo[value[1]]
        if tag == _CONFIG:
            return self._config
        if tag == _TUPLE:
            return tuple(self.dec(v) for v in value[1])
        if tag == _FROZEN:
            return frozenset(self.dec(v) for v in value[1])
        if tag == _BYTES:
            return bytes(value[1])
        if tag == _SCALAR:
            return np.frombuffer(value[2], dtype=_dtype(value[1]), count=1)[0]
        if tag == _LIST:
            out: list[Any] = self._keep([])
            out.extend(self.dec(v) for v in value[1])
            return out
        if tag == _SET:
            s: set[Any] = self._keep(set())
            s.update(self.dec(v) for v in value[1])
            return s
        if tag in (_DICT, _ODICT):
            d: dict[Any, Any] = self._keep({} if tag == _DICT else collections.OrderedDict())
            flat = value[1]
            for i in range(0, len(flat) - 1, 2):
                d[self.dec(flat[i])] = self.dec(flat[i + 1])
            return d
        if tag == _DEQUE:
            q: collections.deque[Any] = self._keep(collections.deque(maxlen=value[1]))
            q.extend(self.dec(v) for v in value[2])
            return q
        if tag == _ARRAY:
            _, dtype, shape, data = value
            arr = np.frombuffer(data, dtype=_dtype(dtype)).reshape(shape).copy()
            return self._keep(arr)
        if tag in (_OBJ, _STRUCT):
            return self._object(tag, value[1], value[2])
        if tag == _RECORD:
            return self._record(value)
        raise StateError(f"unknown tag {tag!r} in state blob")

    def _record(self, value: list[Any]) -> Any:
        """A wire record written whole, read through msgspec's checks of its type."""
        cls = _wire().get(value[1]) if len(value) == 3 and isinstance(value[1], str) else None
        if cls is None:
            raise StateError(f"{value[1:2]!r} is not a wire record type")
        at = len(self._memo)
        self._keep(_PENDING)  # its index, as the encoder numbered it
        try:
            self._memo[at] = msgspec.convert(value[2], cls)
        except msgspec.ValidationError as exc:
            raise StateError(f"{value[1]} in state blob: {exc}") from exc
        return self._memo[at]

    def _object(self, tag: int, name: Any, fields: Any) -> Any:
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None or not isinstance(fields, dict):
            raise StateError(f"class {name!r} is not a state class")
        if tag == _STRUCT:
            if not issubclass(cls, msgspec.Struct):
                raise StateError(f"{name} is not a record type")
            at = len(self._memo)
            self._keep(_PENDING)  # its index, as the encoder numbered it
            self._memo[at] = cls(**{k: self.dec(v) for k, v in fields.items()})
            return self._memo[at]
        obj = self._keep(object.__new__(cls))
        for key, item in fields.items():
            if not isinstance(key, str) or key.startswith("__"):
                raise StateError(f"attribute name {key!r} of {name} is not allowed")
            object.__setattr__(obj, key, self.dec(item))
        return obj


def _dtype(text: Any) -> np.dtype[Any]:
    if not isinstance(text, str):
        raise StateError(f"dtype {text!r} is not a string")
    dtype = np.dtype(text)
    if dtype.kind not in _ARRAY_KINDS:
        raise StateError(f"dtype {text!r} is not allowed in state")
    return dtype


def encode_state(value: Any, config: object) -> bytes:
    """Msgpack of the state graph ``value``; ``config`` is written as a marker."""
    try:
        return msgspec.msgpack.encode(_Encoder(config).enc(value))
    except (TypeError, OverflowError, msgspec.EncodeError) as exc:
        raise StateError(f"state cannot be saved: {exc}") from exc


def decode_state(blob: bytes, config: object) -> Any:
    """Inverse of :func:`encode_state`; raises :class:`StateError` on any damage."""
    try:
        return _Decoder(config).dec(msgspec.msgpack.decode(blob))
    except StateError:
        raise
    except Exception as exc:  # damaged bytes can fail anywhere: all are a bad blob
        raise StateError(f"state blob unreadable: {type(exc).__name__}: {exc}") from exc


def layout_fingerprint(sample: Any, config: object) -> str:
    """What a blob must match to load here: the classes and attributes of ``sample``.

    ``sample`` is a freshly built state graph; the fingerprint also covers ``config`` so
    that a worker with other settings (array sizes, windows) starts fresh rather than
    reading state shaped for them.
    """
    seen: dict[str, list[str]] = {}
    memo: set[int] = set()

    def walk(value: Any) -> None:
        if type(value) in _SCALARS or id(value) in memo:
            return
        memo.add(id(value))
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple | set | frozenset | collections.deque):
            for v in value:
                walk(v)
        elif type(value).__module__.startswith("trainguard.") and value is not config:
            attrs = _attrs(value)
            seen[_name(type(value))] = sorted(attrs)
            for v in attrs.values():
                walk(v)

    walk(sample)
    digest = hashlib.blake2b(repr((sorted(seen.items()), repr(config))).encode(),
                             digest_size=12)
    return digest.hexdigest()
