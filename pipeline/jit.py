"""numba's ``njit`` as the pipeline compiles its kernels: without the GIL, cached on disk.

numba is an optional speed-up (the ``pipeline`` extra installs it). Without it ``jit``
returns the function unchanged and ``AVAILABLE`` is False: callers then take their plain
numpy or Arrow path instead of calling a kernel per value in Python.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AVAILABLE", "jit", "jit_leaf", "nrt_option"]

numba: Any
try:
    import numba
except ImportError:  # pragma: no cover - the pipeline extra installs it
    numba = None

#: True when numba is installed, so ``jit`` compiles.
AVAILABLE = numba is not None


def jit(fn: Any) -> Any:
    """``numba.njit`` without the GIL, cached on disk where the package dir is writable.

    ``error_model="numpy"``: a division by zero gives inf or NaN, as in numpy, instead of
    a check and a ``ZeroDivisionError`` on every division.
    """
    if numba is None:
        return fn
    try:
        return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
    except RuntimeError:  # no cache locator (a read-only install): compile at each start
        return numba.njit(nogil=True, error_model="numpy")(fn)


def jit_leaf(fn: Any) -> Any:
    """``jit`` for a function that allocates nothing: compiled without reference counting.

    A numba call counts references of every array it is passed; for the small helpers of
    a kernel, called per value, that costs more than their own work (numba's ``_nrt``
    option turns it off; such a function must not create arrays). ``_nrt`` is numba's own
    underscore option: a numba that no longer knows it compiles ``fn`` as ``jit`` does
    (slower, the same results) instead of failing at the first call.
    """
    if numba is None:
        return fn
    if not nrt_option():
        return jit(fn)
    try:
        return numba.njit(nogil=True, cache=True, error_model="numpy", _nrt=False)(fn)
    except RuntimeError:  # no cache locator (a read-only install): compile at each start
        return numba.njit(nogil=True, error_model="numpy", _nrt=False)(fn)


def nrt_option() -> bool:
    """Whether this numba's CPU target takes the ``_nrt`` option (numba checks at compile)."""
    try:
        from numba.core.cpu import CPUTargetOptions
    except ImportError:
        return False
    return hasattr(CPUTargetOptions, "_nrt")
