"""zstd for the raw consumer's fetches: one decompression context per thread, not per batch.

Each node's agent sends its own small record batch per message (a tick's sample batch and
step batch go to two topics), zstd-compressed, so the worker decompresses one ~1 kB frame
per message. aiokafka decodes each with ``cramjam.zstd.decompress``, which sets up a fresh
zstd context every call: ~22 µs per 4.9 kB message on this machine, of which ~18 µs is
the set-up (a reused ``zstandard.ZstdDecompressor``: ~4.5 µs; BENCHMARKS.md, round 9). At
20,000 messages/s that set-up alone would be a third of the event loop's core.

:func:`install` points aiokafka's record-batch reader (its compiled and its pure-Python
module) at :func:`zstd_decode`. The fast path takes only what it can read the same way:
a single frame that declares its content size, at most :data:`MAX_CONTENT` bytes (the
agents' kafka-python and aiokafka both write it). Anything else (several frames, no
declared size, a damaged frame) goes to aiokafka's own decoder, which decodes or raises
exactly as it did before, so a hostile batch meets the same errors as without this module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import zstandard

__all__ = ["MAX_CONTENT", "install", "installed", "zstd_decode"]

log = logging.getLogger(__name__)

#: The largest declared frame content the fast path allocates at once (a fetch response is
#: at most a few MiB compressed; the agents' batches are kilobytes). A frame that declares
#: more goes to aiokafka's decoder, as before this module.
MAX_CONTENT = 64 << 20

#: aiokafka's modules that read record batches and call ``zstd_decode`` by its global name.
_READERS = ("aiokafka.record._crecords.default_records", "aiokafka.record.default_records")

_local = threading.local()
_fallback: Callable[[Any], bytes] | None = None


def _context() -> zstandard.ZstdDecompressor:
    """The calling thread's decompressor (a context is not safe to share between threads)."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def zstd_decode(payload: Any) -> bytes:
    """``payload`` (one Kafka batch's zstd bytes) decompressed, as aiokafka's decoder would.

    Raises what aiokafka's decoder raises for input the fast path does not take.
    """
    try:
        size = zstandard.frame_content_size(payload)
        if 0 <= size <= MAX_CONTENT:
            out: bytes = _context().decompress(payload, allow_extra_data=False)
            return out
    except zstandard.ZstdError:
        pass  # several frames, or damaged: aiokafka's decoder decides
    return _aiokafka_decode(payload)


def _aiokafka_decode(payload: Any) -> bytes:
    if _fallback is not None:
        return _fallback(payload)
    from aiokafka.codec import zstd_decode as decode

    return decode(payload)


def install() -> bool:
    """Make aiokafka's batch readers decode zstd with :func:`zstd_decode`; idempotent.

    Returns False (and logs why) when this aiokafka has no such reader to point, in which
    case its own decoder stays: slower, never wrong.
    """
    global _fallback
    import importlib

    done = False
    for name in _READERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # aiokafka built without its compiled readers
        current = getattr(module, "zstd_decode", None)
        if current is None:
            log.warning("zstd decoder not installed module=%s reason=no_zstd_decode", name)
            continue
        if current is not zstd_decode:
            _fallback = _fallback or current
            module.zstd_decode = zstd_decode  # type: ignore[attr-defined]
        done = True
    return done


def installed() -> bool:
    """Whether aiokafka's record-batch reader uses :func:`zstd_decode` now."""
    import importlib

    try:
        module = importlib.import_module(_READERS[0])
    except ImportError:
        module = importlib.import_module(_READERS[1])
    return getattr(module, "zstd_decode", None) is zstd_decode
