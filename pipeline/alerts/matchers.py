"""Silence matchers in amtool's syntax: ``check=gpu_throttled``, ``node!=node-07``, ``job=~"a.*"``.

A matcher compares one alert field with a value: ``=`` equal, ``!=`` not equal, ``=~``
and ``!~`` a regular expression that must match the whole value (anchored, as in
Alertmanager). A field an alert does not have is the empty string, so ``node!=node-07``
matches an alert with no node and ``node=~".+"`` does not.

The fields are trainguard's alert fields, under their label names (and a few amtool-ish
aliases): ``check`` (also ``alertname``), ``job_id`` (``job``), ``node``, ``cluster``,
``category``, ``rank``, ``gpu``. A ``check`` compared with ``=`` or ``!=`` must be a
registered check (:func:`~trainguard.schemas.records.check_name`), so a typo cannot make a
silence that mutes nothing; a regular expression must compile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from trainguard.errors import ConfigError
from trainguard.schemas.records import check_name

__all__ = [
    "MATCHER_NAMES",
    "Matcher",
    "matchers_from_json",
    "matchers_to_json",
    "parse_matcher",
]

Op = Literal["=", "!=", "=~", "!~"]
#: The alert fields a matcher may name.
MATCHER_NAMES: Final = ("check", "job_id", "node", "cluster", "category", "rank", "gpu")
_ALIASES: Final = {"alertname": "check", "job": "job_id", "gpu_index": "gpu"}
_SYNTAX = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")
_MAX_VALUE = 256


@dataclass(frozen=True)
class Matcher:
    """One ``name op value`` condition on an alert's fields; validated on construction."""

    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Resolve aliases; reject unknown names and ops, bad checks and bad regexes."""
        name = _ALIASES.get(self.name, self.name)
        if name not in MATCHER_NAMES:
            raise ConfigError(f"unknown matcher name {self.name!r}; expected one of: "
                              f"{', '.join(MATCHER_NAMES)}")
        object.__setattr__(self, "name", name)
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ConfigError(f"matcher {self.name}: unknown operator {self.op!r}; "
                              "expected =, !=, =~ or !~")
        if not isinstance(self.value, str) or len(self.value) > _MAX_VALUE:
            raise ConfigError(f"matcher {self.name}{self.op}: value must be a string of at "
                              f"most {_MAX_VALUE} characters")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise ConfigError(f"matcher {self}: bad regular expression: {exc}") from None
        elif name == "check" and self.value:
            try:
                check_name(self.value)
            except ValueError as exc:
                raise ConfigError(f"matcher {self}: {exc}") from None

    def __str__(self) -> str:
        """As amtool writes it: ``name="value"`` (quoted when not a plain word)."""
        plain = re.fullmatch(r"[A-Za-z0-9_.:-]+", self.value)
        return f"{self.name}{self.op}{self.value if plain else json.dumps(self.value)}"

    def matches(self, fields: Mapping[str, str]) -> bool:
        """True if the alert with ``fields`` (missing ones: '') meets this condition."""
        got = fields.get(self.name) or ""
        if self._regex is not None:
            hit = self._regex.fullmatch(got) is not None
            return hit if self.op == "=~" else not hit
        return (got == self.value) if self.op == "=" else (got != self.value)

    @property
    def scopes(self) -> bool:
        """An equality on a non-empty value: it narrows a silence to named things."""
        return self.op == "=" and bool(self.value)


def parse_matcher(text: str) -> Matcher:
    """One matcher from amtool's syntax; the value may be double-quoted."""
    found = _SYNTAX.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise ConfigError(f"bad matcher {text!r}; expected NAME=VALUE, NAME!=VALUE, "
                          'NAME=~REGEX or NAME!~REGEX, e.g. check=gpu_throttled node=node-07')
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"bad matcher {text!r}: unterminated or bad quoting") from None
    return Matcher(name, op, value)  # type: ignore[arg-type]  # the regex admits only Op


def matchers_to_json(matchers: Sequence[Matcher]) -> str:
    """The stored form: a JSON list of ``[name, op, value]`` ('' for none)."""
    return json.dumps([[m.name, m.op, m.value] for m in matchers]) if matchers else ""


def matchers_from_json(text: str) -> tuple[Matcher, ...]:
    """Matchers back from :func:`matchers_to_json`; :class:`ConfigError` if malformed."""
    if not text:
        return ()
    try:
        items = json.loads(text)
        return tuple(Matcher(str(n), o, str(v)) for n, o, v in _triples(items))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"stored matchers {text[:80]!r} are malformed: {exc}") from None


def _triples(items: object) -> Iterable[tuple[object, Op, object]]:
    if not isinstance(items, list):
        raise TypeError("expected a list")
    for item in items:
        if not (isinstance(item, list) and len(item) == 3):
            raise TypeError("expected [name, op, value] lists")
        yield item[0], item[1], item[2]
