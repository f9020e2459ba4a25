"""How much a compiled columnar decode of the batches could save the event loop, at most.

Round 12 named "decode sample batches straight into columns with a compiled parser of the
wire JSON" as the lever that would close the rest of issue #17's capacity target: no
per-field Python objects to make and free. This bench measures its ceiling before anyone
builds it. One :class:`bench.loadgen.FleetLoad` tick's sample batches and step batches
(``--nodes`` messages of each, ~4.9 kB each) are decoded per round in two ways:

* ``msgspec``: what the worker does now, ``msgspec.json.Decoder`` of the batch type with
  the records kept until the round ends (as the worker keeps a batch), then freed
  (``free``);
* ``scan``: a numba kernel that walks every byte of every message once and writes each
  item's (GPU's, step record's) numeric and boolean fields into a float column (NaN:
  absent) and its strings' spans into an offset column. It is a lower bound on any real
  columnar decoder: it checks none of the bounds, string contents, duplicate keys or
  headers a parity with msgspec needs, and makes no Python object at all (a real one
  makes the header's strings). It trusts the bytes (no bounds checks): it reads only the
  load generator's messages. ``scan+setup`` adds joining the messages into one buffer and
  allocating the columns.

The bench checks that the scan read the same values msgspec did (every scalar and string
field of every item of every message; it raises otherwise), so the figure is for the whole
job. Printed: medians of thread CPU per message over ``--rounds``, per batch type, and
what the scan saves against msgspec's decode and free (with its set-up, and with the
kernel alone)::

    python -m bench.scan_ceiling
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from msgspec import inspect

from bench.loadgen import FleetLoad
from trainguard.pipeline.jit import jit
from trainguard.schemas.records import GpuSample, GpuSampleBatch, StepBatch, StepRecord
from trainguard.schemas.topics import Topics

_POW10 = np.array([10.0 ** i for i in range(23)])


def _strings(item: type) -> list[str]:
    """The fields of ``item`` that may hold a string."""
    out = []
    for f in inspect.type_info(item).fields:  # type: ignore[attr-defined]
        types = f.type.types if isinstance(f.type, inspect.UnionType) else (f.type,)
        if any(isinstance(_bare(t), inspect.StrType) for t in types):
            out.append(f.name)
    return out


def _bare(t: Any) -> Any:
    """``t`` without the metadata a ``Meta`` with extras wraps it in (strict names)."""
    while isinstance(t, inspect.Metadata):
        t = t.type
    return t


def _bytes(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``words`` as one byte array and their offsets into it (the kernel's key table)."""
    return (np.frombuffer(b"".join(w.encode() for w in words), np.uint8),
            np.cumsum([0, *map(len, words)]).astype(np.int64))


@dataclass(frozen=True)
class Form:
    """One batch type as the scan reads it: its list of items and their keys in order."""

    batch: type
    items: str
    item: type
    #: The items' keys in the order msgspec writes them: the tag first, if any.
    keys: tuple[str, ...] = field(init=False)
    #: Per key, its string slot (-1: not a string).
    slots: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        config = self.item.__struct_config__  # type: ignore[attr-defined]
        tag = (config.tag_field,) if config.tag_field else ()
        keys = (*tag, *self.item.__struct_fields__)  # type: ignore[attr-defined]
        strings = [*tag, *_strings(self.item)]
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "slots", np.array(
            [strings.index(k) if k in strings else -1 for k in keys], np.int64))


#: The two batch types nearly all the traffic is.
FORMS = {"samples": Form(GpuSampleBatch, "gpus", GpuSample),
         "steps": Form(StepBatch, "steps", StepRecord)}


@jit
def _key(buf: np.ndarray, s: int, e: int, k: int, keybuf: np.ndarray,
         keyoff: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether ``buf[s:e]`` is key ``k`` of ``keybuf``."""
    a, b = keyoff[k], keyoff[k + 1]
    if e - s != b - a:
        return False
    for i in range(b - a):
        if buf[s + i] != keybuf[a + i]:
            return False
    return True


@jit
def _number(buf: np.ndarray, p: int, out: np.ndarray, row: int, col: int,
            pow10: np.ndarray) -> int:  # pragma: no cover - compiled
    """Read the JSON number at ``p`` into ``out[row, col]``; the next position, -1 if unread.

    Only the exactly convertible form (no exponent, at most 15 digits): an integer and a
    power of ten, both exact doubles, give the correctly rounded value in one division.
    """
    neg = buf[p] == 45
    if neg:
        p += 1
    m = 0
    digits = frac = 0
    dot = False
    while True:
        c = buf[p]
        if 48 <= c <= 57:
            m = m * 10 + (c - 48)
            digits += 1
            frac += dot
        elif c == 46 and not dot:
            dot = True
        else:
            break
        p += 1
    if digits == 0 or digits > 15 or c == 101 or c == 69:
        return -1
    v = m / pow10[frac]
    out[row, col] = -v if neg else v
    return p


@jit
def _skip(buf: np.ndarray, p: int) -> int:  # pragma: no cover - compiled
    """The position after the string, number or literal at ``p`` (header values)."""
    if buf[p] == 34:
        p += 1
        while buf[p] != 34:
            p += 1
        return p + 1
    while buf[p] != 44 and buf[p] != 125:
        p += 1
    return p


@jit
def _item(buf: np.ndarray, p: int, row: int, keybuf: np.ndarray, keyoff: np.ndarray,
          slots: np.ndarray, pow10: np.ndarray, values: np.ndarray,
          spans: np.ndarray) -> int:  # pragma: no cover - compiled
    """Read the item object at ``p`` (its ``{``) into row ``row``; the position after it."""
    p += 1
    expect = 0
    nk = keyoff.shape[0] - 1
    while buf[p] == 34:
        q = p + 1
        while buf[q] != 34:
            q += 1
        k = expect  # msgspec writes the keys in field order: try the next one first
        if k >= nk or not _key(buf, p + 1, q, k, keybuf, keyoff):
            k = -1
            for j in range(nk):
                if _key(buf, p + 1, q, j, keybuf, keyoff):
                    k = j
                    break
            if k < 0:
                return -1
        p = q + 2
        c = buf[p]
        if c == 34:
            s = p + 1
            q = s
            while buf[q] != 34:
                q += 1
            col = 2 * slots[k]
            if col < 0:
                return -1
            spans[row, col], spans[row, col + 1] = s, q
            p = q + 1
        elif c == 116:
            values[row, k] = 1.0
            p += 4
        elif c == 102:
            values[row, k] = 0.0
            p += 5
        elif c == 110:
            p += 4
        elif c == 91:  # only an empty list (no XIDs, no non-finite fields)
            if buf[p + 1] != 93:
                return -1
            p += 2
        else:
            p = _number(buf, p, values, row, k, pow10)
            if p < 0:
                return -1
        expect = k + 1
        if buf[p] == 44:
            p += 1
    return p + 1


@jit
def _scan(buf: np.ndarray, starts: np.ndarray, keybuf: np.ndarray, keyoff: np.ndarray,
          slots: np.ndarray, pow10: np.ndarray, list_key: np.ndarray, list_off: np.ndarray,
          values: np.ndarray, spans: np.ndarray,
          first_row: np.ndarray) -> int:  # pragma: no cover - compiled
    """Scan every message into the columns; the rows written, or -1 for a form not read."""
    row = 0
    for mi in range(starts.shape[0]):
        first_row[mi] = row
        p = starts[mi] + 1
        while buf[p] == 34:
            q = p + 1
            while buf[q] != 34:
                q += 1
            items = _key(buf, p + 1, q, 0, list_key, list_off)
            p = q + 2
            if items:
                p += 1
                while buf[p] == 123:
                    if row >= values.shape[0]:
                        return -1
                    p = _item(buf, p, row, keybuf, keyoff, slots, pow10, values, spans)
                    if p < 0:
                        return -1
                    row += 1
                    if buf[p] == 44:
                        p += 1
                p += 1
            elif buf[p] == 91:  # another list in the header (claims, events): empty only
                if buf[p + 1] != 93:
                    return -1
                p += 2
            else:
                p = _skip(buf, p)
            if buf[p] == 44:
                p += 1
    first_row[starts.shape[0]] = row
    return row


class Scanner:
    """The kernel's arguments for one :class:`Form`, and the columns it fills."""

    def __init__(self, form: Form) -> None:
        self.form = form
        self.keybuf, self.keyoff = _bytes(form.keys)
        self.list_key, self.list_off = _bytes([form.items])
        self.strings = int(form.slots.max()) + 1

    def columns(self, messages: Sequence[bytes], per_message: int = 8) -> tuple[np.ndarray, ...]:
        """``(buffer, starts, values, spans, first_row)`` for ``messages``, columns empty."""
        buf = np.frombuffer(b"".join(messages), np.uint8)
        lens = np.fromiter(map(len, messages), np.int64, len(messages))
        rows = len(messages) * per_message
        return (buf, np.cumsum(lens) - lens, np.full((rows, len(self.form.keys)), np.nan),
                np.full((rows, 2 * self.strings), -1, np.int64),
                np.empty(len(messages) + 1, np.int64))

    def run(self, buf: np.ndarray, starts: np.ndarray, values: np.ndarray, spans: np.ndarray,
            first_row: np.ndarray) -> int:
        """The kernel over the columns; the rows written, -1 for a form it does not read."""
        return int(_scan(buf, starts, self.keybuf, self.keyoff, self.form.slots, _POW10,
                         self.list_key, self.list_off, values, spans, first_row))

    def scan(self, messages: Sequence[bytes]) -> tuple[np.ndarray, ...]:
        """``(values, spans, first_row, buffer)`` of the messages' items."""
        buf, starts, values, spans, first_row = self.columns(messages)
        if self.run(buf, starts, values, spans, first_row) < 0:
            raise ValueError("a message outside the form the scan reads")
        return values, spans, first_row, buf


def scan(messages: Sequence[bytes], form: str = "samples") -> tuple[np.ndarray, ...]:
    """``(values, spans, first_row, buffer)`` of the messages' items (see the module doc)."""
    return Scanner(FORMS[form]).scan(messages)


def check_same(messages: Sequence[bytes], records: Sequence[Any], form: str = "samples") -> int:
    """Raise unless the scan read every item field msgspec did; return the values compared."""
    f = FORMS[form]
    values, spans, first_row, buf = scan(messages, form)
    raw = buf.tobytes()
    defaults = {x.name: x.default for x in msgspec.structs.fields(f.item)}
    compared = 0
    for i, rec in enumerate(records):
        for j, item in enumerate(getattr(rec, f.items)):
            row = int(first_row[i]) + j
            for col, key in enumerate(f.keys):
                if key not in defaults:
                    continue  # the tag
                want = getattr(item, key)
                slot = int(f.slots[col])
                got: Any
                if isinstance(want, tuple | dict):
                    continue  # the lists and maps: empty on this fleet, not scanned
                if isinstance(want, str) or (want is None and slot >= 0):
                    s, e = spans[row, 2 * slot:2 * slot + 2]
                    got = raw[s:e].decode() if s >= 0 else defaults[key]
                else:
                    got = values[row, col] if not math.isnan(values[row, col]) \
                        else defaults[key]  # off the wire when default: ``omit_defaults``
                    got = None if got is None else float(got)
                    want = None if want is None else float(want)
                if got != want:
                    raise AssertionError(f"message {i} item {j} {key}: scan {got!r}, "
                                         f"msgspec {want!r}")
                compared += 1
    return compared


def scan_ceiling(nodes: int = 16_000, rounds: int = 7) -> dict[str, dict[str, float]]:
    """Per batch type: median thread CPU µs per message of each way, and the values checked."""
    topics = Topics()
    tick = list(FleetLoad(topics, nodes).tick(3, 1.7e9))
    topic = {"samples": topics.samples, "steps": topics.steps}
    gc.freeze()  # the worker freezes its start-up objects too
    return {name: _ceiling(name, [v for t, _, v in tick if t == topic[name]], rounds)
            for name in FORMS}


def _ceiling(form: str, messages: list[bytes], rounds: int) -> dict[str, float]:
    decoder = msgspec.json.Decoder(FORMS[form].batch)
    compared = check_same(messages, [decoder.decode(m) for m in messages], form)
    scanner = Scanner(FORMS[form])
    columns = scanner.columns(messages)
    runs: dict[str, list[float]] = {"msgspec": [], "free": [], "scan": [], "scan+setup": []}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.thread_time()
        out = fn()
        runs[name].append((time.thread_time() - start) / len(messages) * 1e6)
        return out

    for _ in range(rounds):
        kept = timed("msgspec", lambda: list(map(decoder.decode, messages)))
        timed("free", kept.clear)
        timed("scan", lambda: scanner.run(*columns))
        timed("scan+setup", lambda: scanner.scan(messages))
    out = {name: statistics.median(v) for name, v in runs.items()}
    out["compared"] = compared
    out["bytes"] = statistics.mean(map(len, messages))
    return out


def main() -> None:
    """Print the medians per message."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for form, r in scan_ceiling(args.nodes, args.rounds).items():
        print(f"{args.nodes:,} {form} batches of {r['bytes']:,.0f} bytes; the scan read the "
              f"same {r['compared']:,.0f} values msgspec did")
        for name in ("msgspec", "free", "scan", "scan+setup"):
            print(f"  {name:<11} {r[name]:6.2f} µs per message")
        print(f"  most a columnar decode could save: "
              f"{r['msgspec'] + r['free'] - r['scan+setup']:.2f} µs per batch (msgspec + free "
              f"- scan+setup; {r['msgspec'] + r['free'] - r['scan']:.2f} with the kernel alone)")


if __name__ == "__main__":
    main()
