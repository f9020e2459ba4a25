"""glibc's malloc thresholds, pinned where glibc itself would end up, from the worker's start.

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with
a fresh ``mmap``, and returns free memory at the top of its heap to the kernel once it
exceeds ``M_TRIM_THRESHOLD``; either way the next allocation faults its pages in again.
Both are dynamic: when a mapped block is freed, glibc raises the mmap threshold to that
block's size (at most 32 MiB on 64-bit) and the trim threshold to twice that. So what a
batch's allocations cost depends on the largest block the process happened to free
before. The worker's per-batch numpy temporaries are 0.1–30 MB each and alive together:
with the thresholds where a process's earlier frees left them, the heap's top went back to
the kernel after every batch and came back as ~12,000 page faults a tick at 10,000 nodes,
~10 % more time in the baselines (BENCHMARKS.md, round 16).

:func:`pin_malloc_thresholds` sets both thresholds to glibc's own ceilings (32 MiB, 64 MiB)
at the worker's start, as the dynamic rule would after the first 32 MiB free. An operator
who tunes malloc (``GLIBC_TUNABLES`` naming a ``glibc.malloc.`` tunable, or one of the
``MALLOC_*_`` variables) keeps their choice. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping

from trainguard import envvars

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "operator_tuned", "pin_malloc_thresholds"]

log = logging.getLogger(__name__)

#: glibc's ``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit: the most its dynamic rule reaches.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Twice the mmap threshold, as glibc's dynamic rule sets it.
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_VARIABLES = (envvars.MALLOC_ARENA_MAX, envvars.MALLOC_MMAP_MAX,
                     envvars.MALLOC_MMAP_THRESHOLD, envvars.MALLOC_TOP_PAD,
                     envvars.MALLOC_TRIM_THRESHOLD)


def operator_tuned(env: Mapping[str, str]) -> bool:
    """Whether ``env`` tunes glibc's malloc (then the worker leaves it as set)."""
    if any(name in env for name in _MALLOC_VARIABLES):
        return True
    return "glibc.malloc." in env.get(envvars.GLIBC_TUNABLES, "")


def pin_malloc_thresholds(env: Mapping[str, str] | None = None) -> bool:
    """Pin glibc's mmap and trim thresholds (see the module docstring); True when set.

    False, with the reason logged, where the C library is not glibc, the operator tuned
    malloc, or glibc refused a value.
    """
    env = os.environ if env is None else env
    if operator_tuned(env):
        log.info("malloc thresholds left as the operator set them")
        return False
    libc_name = _libc()
    if not libc_name.startswith("glibc"):
        log.info("malloc thresholds left alone libc=%s", libc_name or "unknown")
        return False
    libc = ctypes.CDLL(None)
    for name, param, value in (("mmap", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                               ("trim", _M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            log.warning("malloc threshold not set threshold=%s value=%d", name, value)
            return False
    log.debug("malloc thresholds pinned mmap=%d trim=%d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return True


def _libc() -> str:
    """The C library and its version as it names itself ("glibc 2.36"), or "" if it won't."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # not a GNU libc: the name is unknown to it
        return ""
