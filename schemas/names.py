"""Strict names (nodes, jobs, clusters) checked once per distinct name, not once per field.

msgspec checks a ``pattern`` with one regex call per string, and a step batch of 8 ranks
carries 19 names (3 of its own, 2 per step): that was a third of its decode. So
:data:`~trainguard.schemas.types.StrictName` gives msgspec no pattern, and the codec asks
:func:`names_check` for a function that checks every strict name in a decoded value
against :data:`~trainguard.schemas.types.NAME_PATTERN` (the same ``re.search`` msgspec
does), remembering the names that passed in a bounded :class:`NameCache`. A name that
fails is never remembered, so it fails every time.

A batch of records of one type is checked at once with :func:`all_good_names`: every
strict name of every record gathered in C-level passes (``attrgetter`` and ``chain``) into
one set, and only the names not yet in the cache tried on the pattern, so that a batch of
known names costs a set build, not a Python loop over each record's fields.

When a check fails, the codec decodes the message once more with :func:`strict_twin` of
the type: the same structs with the pattern restored, so that the error is msgspec's own,
word for word and at the same place, as when the pattern was on the type itself.
"""

from __future__ import annotations

import functools
import operator
import re
import types
from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import chain
from typing import Annotated, Any, Final, Union, get_args, get_origin

import msgspec
from msgspec import Meta

from trainguard.schemas.types import NAME_PATTERN

__all__ = ["MAX_CACHED_NAMES", "NAMES", "NameCache", "all_good_names", "names_check",
           "strict_twin"]

#: Distinct names remembered as good; past that the cache starts over (an attacker's flood
#: of new names costs the regex each, as before, and no memory).
MAX_CACHED_NAMES: Final = 1 << 16

#: True when every strict name inside the value matches the pattern.
Check = Callable[[Any], bool]
#: The strict names (``None`` for an optional one) inside a list of values of one type, as
#: iterables (one per field).
Collect = Callable[[Sequence[Any]], list[Iterable[str | None]]]

_NAME_RE = re.compile(NAME_PATTERN)


class NameCache:
    """Names known to match :data:`NAME_PATTERN`: at most ``size``, only ones that passed."""

    def __init__(self, size: int = MAX_CACHED_NAMES) -> None:
        self.size = size
        #: The names that passed (the same set for the cache's life: read it, never write).
        self.known: set[str] = set()

    def __len__(self) -> int:
        return len(self.known)

    def __contains__(self, name: object) -> bool:
        return name in self.known

    def ok(self, name: str) -> bool:
        """Whether ``name`` matches the pattern; a name that passed is remembered."""
        if name in self.known:
            return True
        if _NAME_RE.search(name) is None:
            return False
        if len(self.known) >= self.size:
            self.known.clear()
        self.known.add(name)
        return True


#: The cache every decoder shares (a worker sees the same nodes and jobs on every topic).
NAMES = NameCache()


def _is_name(meta: object) -> bool:
    extra = getattr(meta, "extra", None)
    return isinstance(extra, dict) and extra.get("pattern") == NAME_PATTERN


def _runtime_class(tp: Any) -> type:
    """The class a value of type ``tp`` has at run time (for union members)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _runtime_class(get_args(tp)[0])
    return origin if isinstance(origin, type) else tp


def names_check(tp: Any) -> Check | None:
    """A check of every strict name inside a decoded ``tp``; None when ``tp`` holds none."""
    return _names_check(tp)


@functools.cache
def _names_check(tp: Hashable) -> Check | None:
    return _check(tp, {})


def _check(tp: Any, memo: dict[Any, Check | None]) -> Check | None:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        if any(_is_name(m) for m in args[1:]):
            return _name
        return _check(args[0], memo)
    if origin in (Union, types.UnionType):
        members = [(_runtime_class(a), c) for a in args if (c := _check(a, memo)) is not None]
        if all(c is _name for _, c in members):  # ``StrictName | None``: None is no name
            return _name if members else None
        return _union(members)
    if origin in (list, tuple, set, frozenset):
        inner = [c for a in args if a is not Ellipsis and (c := _check(a, memo)) is not None]
        return _each(inner) if inner else None
    if origin is dict:
        key, value = (_check(a, memo) for a in args)
        return _mapping(key, value) if key or value else None
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct(tp, memo)
    return None


def _name(value: str | None) -> bool:
    """Whether ``value`` is a good name (``None``: a field that names nothing)."""
    return value is None or value in _KNOWN or NAMES.ok(value)


#: The cache's set, read directly on the hot path (``clear`` keeps the same set).
_KNOWN = NAMES.known
#: Struct checks that only read names (no nested values): the fields' getter, for loops.
_FLAT: dict[Check, Callable[[Any], tuple[str | None, ...]]] = {}


def _union(members: list[tuple[type, Check]]) -> Check:
    by_type = dict(members)

    def check(value: Any) -> bool:
        inner = by_type.get(type(value))
        if inner is not None:
            return inner(value)
        for cls, inner in members:
            if isinstance(value, cls):
                return inner(value)
        return True
    return check


def _each(inner: list[Check]) -> Check:
    if len(inner) == 1 and inner[0] in _FLAT:
        get = _FLAT[inner[0]]

        def flat(values: Any) -> bool:  # e.g. the steps of a step batch: two names each
            ok = NAMES.ok
            for value in values:
                for name in get(value):
                    if name not in _KNOWN and name is not None and not ok(name):
                        return False
            return True
        return flat

    def check(values: Any) -> bool:
        for value in values:
            for c in inner:
                if not c(value):
                    return False
        return True
    return check


def _mapping(key: Check | None, value: Check | None) -> Check:
    def check(mapping: dict[Any, Any]) -> bool:
        return all((key is None or key(k)) and (value is None or value(v))
                   for k, v in mapping.items())
    return check


def _struct(cls: type[msgspec.Struct], memo: dict[Any, Check | None]) -> Check | None:
    if cls in memo:  # a recursive type: the check is being built; look it up when called
        return lambda value: _late(cls, memo)(value)
    memo[cls] = None
    names, nested = [], []
    for field in msgspec.structs.fields(cls):
        inner = _check(field.type, memo)
        if inner is _name:
            names.append(field.name)
        elif inner is not None:
            nested.append((field.name, inner))
    if not names and not nested:
        return None
    get = _getter(names)

    def check(value: Any) -> bool:
        for name in get(value):
            if name not in _KNOWN and name is not None and not NAMES.ok(name):
                return False
        for attr, inner in nested:
            if not inner(getattr(value, attr)):
                return False
        return True
    memo[cls] = check
    if not nested:
        _FLAT[check] = get
    return check


def _getter(names: list[str]) -> Callable[[Any], tuple[str | None, ...]]:
    """The values of fields ``names`` of a struct, as a tuple."""
    if len(names) == 1:
        (only,) = names
        return lambda value: (getattr(value, only),)
    if not names:
        return lambda value: ()
    return operator.attrgetter(*names)


def _late(cls: type, memo: dict[Any, Check | None]) -> Check:
    found = memo[cls]
    return found if found is not None else (lambda value: True)


def all_good_names(tp: Any, values: Sequence[Any]) -> bool:
    """Whether every strict name inside every one of ``values`` (all of type ``tp``) is good.

    The same verdict as ``all(map(names_check(tp), values))``, in C-level passes over the
    batch where ``tp``'s names sit in plain fields and lists of structs (the records).
    """
    collect = _collector(tp)
    if collect is None:
        check = names_check(tp)
        return check is None or all(map(check, values))
    found: set[str | None] = set()
    for names in collect(values):
        found.update(names)
    # ``set - set`` walks the smaller left side: the batch's distinct names, not the cache.
    unknown = found - _KNOWN
    unknown.discard(None)
    ok: Callable[[Any], bool] = NAMES.ok
    return all(map(ok, unknown))


@functools.cache
def _collector(tp: Hashable) -> Collect | None:
    """How to gather the strict names of many ``tp`` at once; None when not in plain passes."""
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return None
    names: list[str] = []
    nested: list[tuple[Callable[[Any], Any], Collect]] = []
    for field in msgspec.structs.fields(tp):
        check = _check(field.type, {})
        if check is None:
            continue
        if check is _name:
            names.append(field.name)
            continue
        item = _list_item(field.type)
        inner = _collector(item) if item is not None else None
        if inner is None:
            return None
        nested.append((operator.attrgetter(field.name), inner))
    own = [operator.attrgetter(name) for name in names]

    def collect(values: Sequence[Any]) -> list[Iterable[str | None]]:
        # One ``map`` per field: a getter of one attribute builds no tuple.
        found: list[Iterable[str | None]] = [map(get, values) for get in own]
        for items, inner in nested:
            found += inner(list(chain.from_iterable(map(items, values))))
        return found
    return collect


def _list_item(tp: Any) -> Any:
    """The item type of ``list[X]`` (under ``Annotated`` too); None for anything else."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _list_item(args[0])
    return args[0] if origin is list and len(args) == 1 else None


def strict_twin(tp: Any) -> Any:
    """``tp`` with the pattern back on every strict name (twins of its structs)."""
    return _strict_twin(tp)


@functools.cache
def _strict_twin(tp: Hashable) -> Any:
    return _twin(tp, {})


def _twin(tp: Any, memo: dict[type, Any]) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        metas = tuple(_strict_meta(m) if _is_name(m) else m for m in args[1:])
        return Annotated[(_twin(args[0], memo), *metas)]
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, (_twin(a, memo) for a in args))
    if origin in (list, tuple, set, frozenset, dict):
        return origin[tuple(a if a is Ellipsis else _twin(a, memo) for a in args)]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if tp not in memo:
            memo[tp] = _struct_twin(tp, memo)
        return memo[tp]
    return tp


def _strict_meta(meta: Meta) -> Meta:
    """A strict name's constraints with the pattern for msgspec to check."""
    return Meta(min_length=meta.min_length, max_length=meta.max_length,
                pattern=(meta.extra or {})["pattern"])


def _struct_twin(cls: type[msgspec.Struct], memo: dict[type, Any]) -> Any:
    fields: list[Any] = []
    for f in msgspec.structs.fields(cls):
        if f.default_factory is not msgspec.NODEFAULT:
            default = msgspec.field(default_factory=f.default_factory, name=f.encode_name)
        elif f.default is not msgspec.NODEFAULT:
            default = msgspec.field(default=f.default, name=f.encode_name)
        else:
            default = msgspec.field(name=f.encode_name)
        fields.append((f.name, _twin(f.type, memo), default))
    cfg = cls.__struct_config__
    return msgspec.defstruct(
        cls.__name__, fields, kw_only=True, frozen=cfg.frozen, tag_field=cfg.tag_field,
        tag=cfg.tag, omit_defaults=cfg.omit_defaults,
        forbid_unknown_fields=cfg.forbid_unknown_fields, array_like=cfg.array_like,
        module=f"{__name__}.strict")
