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

lz4 (an agent's ``compression = "lz4"``) the same way: aiokafka decodes it with
``cramjam`` (~4 µs a message of the bench's load), :func:`lz4_decode` with python-lz4
(2.2–3.4 µs with its checks; zstd through the reused context 4.4–5.3; BENCHMARKS.md, round
12). It takes one frame that declares its content size (the agents' kafka-python writes
it) and leaves the rest to aiokafka's decoder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import lz4.frame
import zstandard

__all__ = ["MAX_CONTENT", "READERS", "install", "installed", "lz4_decode", "zstd_decode"]

log = logging.getLogger(__name__)

#: The largest declared frame content the fast path allocates at once (a fetch response is
#: at most a few MiB compressed; the agents' batches are kilobytes). A frame that declares
#: more goes to aiokafka's decoder, as before this module.
MAX_CONTENT = 64 << 20

_LZ4_MAGIC = b"\x04\x22\x4d\x18"

#: aiokafka's modules that read record batches and call their decoders by global name.
READERS = ("aiokafka.record._crecords.default_records", "aiokafka.record.default_records")

_local = threading.local()
#: aiokafka's own decoders, by the global name its readers call them by.
_fallbacks: dict[str, Callable[[Any], bytes]] = {}


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
    return _aiokafka_decode("zstd_decode", payload)


def lz4_decode(payload: Any) -> bytes:
    """``payload`` (one Kafka batch's LZ4 frame) decompressed, as aiokafka's decoder would.

    Raises what aiokafka's decoder raises for input the fast path does not take.
    """
    try:
        size = _lz4_content_size(payload)
        if 0 < size <= MAX_CONTENT:
            out, used = lz4.frame.decompress(payload, return_bytes_read=True)
            if used == len(payload) and len(out) == size:  # one frame, all of it
                return bytes(out)
    except (RuntimeError, ValueError, TypeError, IndexError):
        pass  # damaged, or not one frame: aiokafka's decoder decides
    return _aiokafka_decode("lz4_decode", payload)


def _lz4_content_size(payload: Any) -> int:
    """The content size an LZ4 frame's header declares; -1 for none.

    Read here, not with ``lz4.frame.get_frame_info`` (~1 µs, a third of the decode): the
    magic number, then the flags byte, whose bit 3 says the 8-byte size follows the
    block-descriptor byte. The decompressor checks the header's checksum and the size.
    """
    if payload[:4] != _LZ4_MAGIC or not payload[4] & 0x08:
        return -1
    return int.from_bytes(payload[6:14], "little")


def _aiokafka_decode(name: str, payload: Any) -> bytes:
    decode = _fallbacks.get(name)
    if decode is None:
        import aiokafka.codec

        decode = getattr(aiokafka.codec, name)
    return decode(payload)


#: The decoders :func:`install` points aiokafka's readers at, by their global names there.
_OURS: dict[str, Callable[[Any], bytes]] = {"zstd_decode": zstd_decode,
                                             "lz4_decode": lz4_decode}


def install() -> bool:
    """Make aiokafka's batch readers decode zstd and lz4 through this module; idempotent.

    Returns False (and logs why) when this aiokafka has no such reader to point, in which
    case its own decoders stay: slower, never wrong.
    """
    import importlib

    done = False
    for module_name in READERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # aiokafka built without its compiled readers
        for name, ours in _OURS.items():
            current = getattr(module, name, None)
            if current is None:
                log.warning("decoder not installed module=%s codec=%s reason=missing",
                            module_name, name)
                continue
            if current is not ours:
                _fallbacks.setdefault(name, current)
                setattr(module, name, ours)
            done = done or name == "zstd_decode"
    return done


def installed() -> bool:
    """Whether aiokafka's record-batch reader uses this module's decoders now."""
    import importlib

    try:
        module = importlib.import_module(READERS[0])
    except ImportError:
        module = importlib.import_module(READERS[1])
    return all(getattr(module, name, None) is ours for name, ours in _OURS.items())
