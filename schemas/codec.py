"""Encoding and strict decoding of wire records, with a reason for every rejection.

Decoding never raises anything but :class:`RecordError`, whose ``reason`` is one of a
small fixed set (used as the dead-letter reason and as a metric label) and whose
message says what was wrong and where, e.g.
``Expected `float` >= 0, got `-3.0` - at `$.gpus[0].power_w```. That holds for hostile
bytes too: a string that is not valid UTF-8 is ``not_json`` (msgspec raises
``UnicodeDecodeError`` for it, not ``DecodeError``), and JSON nested deeper than the
decoder's recursion allows (even inside an ignored unknown field) is ``invalid``.

Strict names (nodes, jobs, clusters) are checked after msgspec's decode, once per distinct
name (:mod:`trainguard.schemas.names`); a message that fails that or the decode is decoded
again with the pattern on the type, so every rejection reads as it always did.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from trainguard.schemas.names import all_good_names, names_check, strict_twin
from trainguard.schemas.records import SCHEMA_VERSION, Record

__all__ = [
    "MAX_RECORD_BYTES",
    "PARSE_ERRORS",
    "RecordDecoder",
    "RecordError",
    "RejectReason",
    "all_verified",
    "convert",
    "encode",
]

#: Larger messages are rejected before parsing: no agent sends anything near this.
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024

RejectReason = Literal["too_large", "not_json", "invalid", "wrong_kind", "unsupported_version"]

T = TypeVar("T")

#: What msgspec raises for bytes that are no record of the type (all become RecordError).
PARSE_ERRORS: Final = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError,
                       RecursionError)
_VERSION = operator.attrgetter("schema_version")

_encoder = msgspec.json.Encoder()


class RecordError(ValueError):
    """A message that is not a valid record of the expected kind."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: RejectReason = reason
        self.message = message


class _Envelope(msgspec.Struct):
    """Just enough of any record to explain why a full decode failed."""

    kind: Any = None
    schema_version: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def encode(record: Record) -> bytes:
    """Serialize one record to its JSON wire form."""
    return _encoder.encode(record)


class RecordDecoder(Generic[T]):
    """Strict decoder for one record type (or a union of them).

    Build one per topic and reuse it: msgspec compiles the type once.
    """

    def __init__(self, record_type: type[T] | Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(record_type)
        self._names = names_check(record_type)
        #: The same type with the name pattern on it, for the words of a rejection.
        self._strict: msgspec.json.Decoder[Any] = (
            self._decoder if self._names is None
            else msgspec.json.Decoder(strict_twin(record_type)))
        self._type_name = getattr(record_type, "__name__", str(record_type))

    def decode(self, data: bytes | bytearray | memoryview | None) -> T:
        """Decode and validate ``data``; raise :class:`RecordError` with a reason."""
        return self.verify(self.parse(data), data)

    def parse(self, data: bytes | bytearray | memoryview | None) -> T:
        """Decode ``data`` without the checks :meth:`verify` makes (names, version).

        A record from here is only valid once :meth:`verify` (or a batch check with the
        same verdict, :func:`all_verified`) has passed it; a rejection is the same
        :class:`RecordError` as :meth:`decode` raises.
        """
        if data is None:
            raise RecordError("not_json", "empty message (null value)")
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(
                "too_large", f"message of {len(data)} bytes exceeds {MAX_RECORD_BYTES} bytes"
            )
        try:
            return self._decoder.decode(data)
        except PARSE_ERRORS as exc:
            # With the names' pattern on the type a name before the failure fails first.
            raise self._rejection(data, exc) from None

    @property
    def parse_unchecked(self) -> Callable[[bytes], T]:
        """The msgspec decode alone: what :meth:`parse` does after its size check.

        Raises :data:`PARSE_ERRORS` (or ``TypeError`` for a value that is no buffer)
        where :meth:`parse` raises :class:`RecordError`; for the hot loop of a batch.
        """
        return self._decoder.decode

    def verify(self, record: T, data: bytes | bytearray | memoryview | None) -> T:
        """``record`` (parsed from ``data``) when its names and version are valid.

        Raises the :class:`RecordError` :meth:`decode` raises for ``data``.
        """
        if self._names is not None and not self._names(record):
            raise self._rejection(data or b"", None) from None
        version = getattr(record, "schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise RecordError(
                "unsupported_version",
                f"schema_version {version} is newer than this reader's {SCHEMA_VERSION}",
            )
        return record

    def _rejection(self, data: bytes | bytearray | memoryview,
                   exc: Exception | None) -> RecordError:
        """Why ``data`` is no record, as the decoder with the names' pattern says it."""
        if self._strict is not self._decoder or exc is None:
            try:
                self._strict.decode(data)
            except PARSE_ERRORS as strict:
                exc = strict
            else:  # unreachable: the strict type accepts less than the plain one
                if exc is None:
                    return RecordError("invalid", "a name does not match the name pattern")
        if isinstance(exc, msgspec.ValidationError):
            return self._classify(data, exc)
        assert exc is not None
        return _undecodable(exc)

    def _classify(self, data: bytes | bytearray | memoryview, exc: Exception) -> RecordError:
        """Turn a validation failure into the most useful reason (error path only)."""
        try:
            env = _envelope_decoder.decode(data)
        except PARSE_ERRORS:
            return RecordError("invalid", f"{exc} (expected a JSON object of {self._type_name})")
        if isinstance(env.schema_version, int) and env.schema_version > SCHEMA_VERSION:
            return RecordError(
                "unsupported_version",
                f"schema_version {env.schema_version} is newer than this reader's {SCHEMA_VERSION}",
            )
        if "`$.kind`" in str(exc):
            return RecordError(
                "wrong_kind", f"kind {env.kind!r} is not a record of type {self._type_name}"
            )
        return RecordError("invalid", str(exc))


def _undecodable(exc: Exception) -> RecordError:
    """The reason for bytes msgspec could not parse at all."""
    if isinstance(exc, RecursionError):
        # msgspec recurses once per nesting level, unknown fields included, and stops at
        # the interpreter's recursion limit: no record is nested anywhere near that deep.
        return RecordError("invalid", "JSON nested too deeply to decode")
    if isinstance(exc, UnicodeDecodeError):
        return RecordError(
            "not_json", f"invalid UTF-8 at byte {exc.start}: {exc.reason} (JSON must be UTF-8)"
        )
    return RecordError("not_json", str(exc))


def convert(obj: Any, record_type: type[T]) -> T:
    """``msgspec.convert(obj, record_type, strict=True)``, strict names checked as by the codec.

    Raises ``msgspec.ValidationError`` with msgspec's own message, as that call did.
    """
    check = names_check(record_type)
    try:
        record = msgspec.convert(obj, record_type, strict=True)
    except msgspec.ValidationError:
        if check is None:
            raise
    else:
        if check is None or check(record):
            return record
    # With the names' pattern on the type a name before any other fault fails first.
    msgspec.convert(obj, strict_twin(record_type), strict=True)
    raise msgspec.ValidationError("a name does not match the name pattern")  # unreachable


def all_verified(records: Sequence[Any]) -> bool:
    """True when every one of ``records`` (all of one struct type) passes ``verify``.

    The verdict of :meth:`RecordDecoder.verify` of any decoder that parses their type, on
    the whole batch in C-level passes: every strict name at once
    (:func:`~trainguard.schemas.names.all_good_names`), then the highest version. False
    says only that some record may not pass: ``verify`` each to learn which, and why.
    """
    if not records:
        return True
    cls = type(records[0])
    if not all_good_names(cls, records):
        return False
    if "schema_version" not in getattr(cls, "__struct_fields__", ()):
        return True
    return max(map(_VERSION, records)) <= SCHEMA_VERSION
