"""How much a compiled columnar decode of sample batches could save the event loop, at most.

Round 12 named "decode sample batches straight into columns with a compiled parser of the
wire JSON" as the lever that would close the rest of issue #17's capacity target: no
per-field Python objects to make and free. This bench measures its ceiling before anyone
builds it. One :class:`bench.loadgen.FleetLoad` tick's sample batches (``--nodes``
messages, ~4.9 kB each) are decoded per round in two ways:

* ``msgspec``: what the worker does now, ``msgspec.json.Decoder(GpuSampleBatch)`` with the
  records kept until the round ends (as the worker keeps a batch), then freed (``free``);
* ``scan``: a numba kernel that walks every byte of every message once and writes each
  GPU's numeric and boolean fields into a float column (NaN: absent) and its two strings'
  spans into an offset column. It is a lower bound on any real columnar decoder: it checks
  none of the bounds, string contents, duplicate keys or headers a parity with msgspec
  needs, and makes no Python object at all (a real one makes the header's strings). It
  trusts the bytes (no bounds checks): it reads only the load generator's messages.
  ``scan+setup`` adds joining the messages into one buffer and allocating the columns.

The bench checks that the scan read the same values msgspec did (every GPU field of every
message; it raises otherwise), so the figure is for the whole job. Printed: medians of
thread CPU per message over ``--rounds``, and what the scan saves against msgspec's decode
and free (with its set-up, and with the kernel alone)::

    python -m bench.scan_ceiling
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from bench.loadgen import FleetLoad
from trainguard.pipeline.jit import jit
from trainguard.schemas.records import GpuSample, GpuSampleBatch
from trainguard.schemas.topics import Topics

#: The GPU object's keys in the order msgspec encodes them (the scan's column order).
GPU_KEYS = tuple(GpuSample.__struct_fields__)
_KEYBUF = np.frombuffer(b"".join(k.encode() for k in GPU_KEYS), np.uint8)
_KEYOFF = np.cumsum([0, *map(len, GPU_KEYS)]).astype(np.int64)
_STRINGS = {"uuid": 0, "model": 1}
#: What an absent key reads as (``lost`` is off the wire when False: ``omit_defaults``).
_DEFAULTS = {f.name: f.default for f in msgspec.structs.fields(GpuSample)}
_POW10 = np.array([10.0 ** i for i in range(23)])
_GPUS = np.frombuffer(b"gpus", np.uint8)
_GPUS_OFF = np.array([0, 4], np.int64)


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
def _gpu(buf: np.ndarray, p: int, row: int, keybuf: np.ndarray, keyoff: np.ndarray,
         pow10: np.ndarray, values: np.ndarray,
         spans: np.ndarray) -> int:  # pragma: no cover - compiled
    """Read the GPU object at ``p`` (its ``{``) into row ``row``; the position after it."""
    p += 1
    expect = 0
    nk = keyoff.shape[0] - 1
    while buf[p] == 34:
        q = p + 1
        while buf[q] != 34:
            q += 1
        k = expect  # msgspec writes the keys in field order: try the next one first
        if not _key(buf, p + 1, q, k, keybuf, keyoff):
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
            col = 2 * (k - 1)  # uuid (1) and model (2) are the only strings
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
          pow10: np.ndarray, gpus_key: np.ndarray, gpus_off: np.ndarray, values: np.ndarray,
          spans: np.ndarray, first_row: np.ndarray) -> int:  # pragma: no cover - compiled
    """Scan every message into the columns; the rows written, or -1 for a form not read."""
    row = 0
    for mi in range(starts.shape[0]):
        first_row[mi] = row
        p = starts[mi] + 1
        while buf[p] == 34:
            q = p + 1
            while buf[q] != 34:
                q += 1
            gpus = _key(buf, p + 1, q, 0, gpus_key, gpus_off)
            p = q + 2
            if gpus:
                p += 1
                while buf[p] == 123:
                    p = _gpu(buf, p, row, keybuf, keyoff, pow10, values, spans)
                    if p < 0:
                        return -1
                    row += 1
                    if buf[p] == 44:
                        p += 1
                p += 1
            else:
                p = _skip(buf, p)
            if buf[p] == 44:
                p += 1
    first_row[starts.shape[0]] = row
    return row


def scan(values_in: Sequence[bytes], gpus_per_message: int = 8) -> tuple[np.ndarray, ...]:
    """``(values, spans, first_row, buffer)`` of the messages' GPUs (see the module doc)."""
    buf = np.frombuffer(b"".join(values_in), np.uint8)
    lens = np.fromiter(map(len, values_in), np.int64, len(values_in))
    starts = np.cumsum(lens) - lens
    rows = len(values_in) * gpus_per_message
    values = np.full((rows, len(GPU_KEYS)), np.nan)
    spans = np.full((rows, 4), -1, np.int64)
    first_row = np.empty(len(values_in) + 1, np.int64)
    if _scan(buf, starts, _KEYBUF, _KEYOFF, _POW10, _GPUS, _GPUS_OFF, values, spans, first_row) < 0:
        raise ValueError("a message outside the form the scan reads")
    return values, spans, first_row, buf


def check_same(messages: Sequence[bytes], records: Sequence[GpuSampleBatch]) -> int:
    """Raise unless the scan read every GPU field msgspec did; return the values compared."""
    values, spans, first_row, buf = scan(messages)
    raw = buf.tobytes()
    compared = 0
    for i, rec in enumerate(records):
        for j, gpu in enumerate(rec.gpus):
            row = int(first_row[i]) + j
            for col, key in enumerate(GPU_KEYS):
                want = getattr(gpu, key)
                if key in _STRINGS:
                    s, e = spans[row, 2 * _STRINGS[key]:2 * _STRINGS[key] + 2]
                    got: Any = raw[s:e].decode() if s >= 0 else None
                elif isinstance(want, bool | int | float) or want is None:
                    got = (values[row, col] if not math.isnan(values[row, col])
                           else _DEFAULTS[key])
                    got = None if got is None else float(got)
                    want = None if want is None else float(want)
                else:
                    continue  # the tuples and dict: empty on this fleet, not scanned
                if got != want:
                    raise AssertionError(f"message {i} GPU {j} {key}: scan {got!r}, "
                                         f"msgspec {want!r}")
                compared += 1
    return compared


def scan_ceiling(nodes: int = 16_000, rounds: int = 7) -> dict[str, float]:
    """Median thread CPU µs per message of each way, and the values checked equal."""
    topics = Topics()
    messages = [v for t, _, v in FleetLoad(topics, nodes).tick(3, 1.7e9) if t == topics.samples]
    decoder = msgspec.json.Decoder(GpuSampleBatch)
    compared = check_same(messages, [decoder.decode(m) for m in messages])
    gc.freeze()  # the worker freezes its start-up objects too
    scan(messages[:1])  # compiled before timing
    buf = np.frombuffer(b"".join(messages), np.uint8)
    lens = np.fromiter(map(len, messages), np.int64, len(messages))
    starts = np.cumsum(lens) - lens
    values = np.full((len(messages) * 8, len(GPU_KEYS)), np.nan)
    spans = np.full((len(messages) * 8, 4), -1, np.int64)
    first_row = np.empty(len(messages) + 1, np.int64)
    runs: dict[str, list[float]] = {"msgspec": [], "free": [], "scan": [], "scan+setup": []}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.thread_time()
        out = fn()
        runs[name].append((time.thread_time() - start) / len(messages) * 1e6)
        return out

    for _ in range(rounds):
        kept = timed("msgspec", lambda: list(map(decoder.decode, messages)))
        timed("free", kept.clear)
        timed("scan", lambda: _scan(buf, starts, _KEYBUF, _KEYOFF, _POW10, _GPUS, _GPUS_OFF,
                                    values, spans, first_row))
        timed("scan+setup", lambda: scan(messages))
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
    r = scan_ceiling(args.nodes, args.rounds)
    print(f"{args.nodes:,} sample batches of {r['bytes']:,.0f} bytes; the scan read the same "
          f"{r['compared']:,.0f} GPU values msgspec did")
    for name in ("msgspec", "free", "scan", "scan+setup"):
        print(f"  {name:<11} {r[name]:6.2f} µs per message")
    print(f"  most a columnar decode could save: {r['msgspec'] + r['free'] - r['scan+setup']:.2f} "
          f"µs per sample batch (msgspec + free - scan+setup; "
          f"{r['msgspec'] + r['free'] - r['scan']:.2f} with the kernel alone)")


if __name__ == "__main__":
    main()
