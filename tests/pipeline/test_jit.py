"""jit / jit_leaf: numba kernels without the GIL; a numba without ``_nrt`` still compiles."""

from __future__ import annotations

import numpy as np
import pytest

from trainguard.pipeline import jit as jit_module
from trainguard.pipeline.jit import AVAILABLE, jit, jit_leaf, nrt_option

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")


def _total(values: np.ndarray) -> float:
    out = 0.0
    for v in values:
        out += v
    return out


def test_this_numba_takes_the_nrt_option() -> None:
    assert nrt_option()  # else the store's kernel runs with reference counting (slower)


def test_a_leaf_compiles_without_reference_counting_and_without_the_gil() -> None:
    leaf = jit_leaf(_total)
    assert leaf(np.arange(5.0)) == 10.0
    assert leaf.targetoptions["_nrt"] is False
    assert leaf.targetoptions["nogil"] is True


def test_a_numba_without_the_option_compiles_the_leaf_as_jit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jit_module, "nrt_option", lambda: False)
    leaf = jit_leaf(_total)
    assert leaf(np.arange(5.0)) == 10.0
    assert "_nrt" not in leaf.targetoptions
    assert leaf.targetoptions == jit(_total).targetoptions
