"""Numeric columns from msgpack notes in one compiled pass, without the GIL.

:mod:`~trainguard.pipeline.sinks.record_pack` notes every field of a batch (its msgpack
type and value, :mod:`~trainguard.pipeline.sinks.msgpack_notes`), then makes each column
from its notes. In numpy that took about five passes over a column per float (a type
check, a finite check, the mask, Arrow's validity bitmap, the conversion), ~34 ns a value,
most of it with the GIL held: at 10,000 nodes, a fifth of the store thread and GIL the
event loop waited for. These kernels take one pass: the value into its column type and
whether it is valid.

They read only the notes msgspec's own encoding of validated records gives (a float field
as ``FLOAT``, an integer field as ``UINT`` or ``BIG``, missing or ``None`` as ``MISSING``
or ``NIL``). For anything else (another type, a value its column cannot hold) they return
:data:`OTHER_PATH` and the caller takes the numpy path, which reads every case and raises
the error the column's type gives; so the columns and the errors are the same either way.
"""

from __future__ import annotations

import numpy as np

from trainguard.pipeline.jit import jit
from trainguard.pipeline.sinks.msgpack_notes import BIG, FLOAT, MISSING, NIL, UINT

__all__ = ["OTHER_PATH", "float_values", "uint_values"]

#: What a kernel returns for notes it does not read (see the module docstring).
OTHER_PATH = -1


@jit
def float_values(kind: np.ndarray, bits: np.ndarray, floats: np.ndarray, out: np.ndarray,
                 valid: np.ndarray) -> int:  # pragma: no cover - compiled
    """Fill ``out`` (a float column) and ``valid`` from the notes; return the null count.

    ``bits`` are the notes' values and ``floats`` the same bytes as float64. Missing,
    ``None``, NaN and infinite values are null (their ``out`` is 0). Returns
    :data:`OTHER_PATH` for a note other than a float, an unsigned integer or nothing.
    """
    nulls = 0
    for i in range(len(kind)):
        k = kind[i]
        if k == FLOAT:
            x = floats[i]
        elif k == UINT or k == BIG:
            x = np.float64(bits[i])
        elif k == MISSING or k == NIL:
            out[i], valid[i] = 0, False
            nulls += 1
            continue
        else:
            return OTHER_PATH
        if np.isfinite(x):
            out[i], valid[i] = x, True
        else:
            out[i], valid[i] = 0, False
            nulls += 1
    return nulls


@jit
def uint_values(kind: np.ndarray, bits: np.ndarray, top: np.uint64, out: np.ndarray,
                valid: np.ndarray) -> int:  # pragma: no cover - compiled
    """Fill ``out`` (an unsigned column up to ``top``) and ``valid``; return the null count.

    Returns :data:`OTHER_PATH` for a note other than an unsigned integer or nothing, or
    for a value over ``top``.
    """
    nulls = 0
    for i in range(len(kind)):
        k = kind[i]
        if k == UINT or k == BIG:
            v = bits[i]
            if v > top:
                return OTHER_PATH
            out[i], valid[i] = v, True
        elif k == MISSING or k == NIL:
            out[i], valid[i] = 0, False
            nulls += 1
        else:
            return OTHER_PATH
    return nulls
