"""The worker turns numpy's huge-page advice off unless the operator set it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from trainguard.pipeline.worker import _tune_memory

_core: Any = importlib.import_module(
    "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2
    else "numpy.core.multiarray")


@pytest.fixture
def advice() -> Iterator[None]:
    """numpy's advice on for the test, then as it was."""
    before = _core._get_madvise_hugepage()
    _core._set_madvise_hugepage(True)
    yield
    _core._set_madvise_hugepage(before)


def test_the_advice_is_off_after_tuning(advice: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    assert _core._get_madvise_hugepage()
    assert _tune_memory() is True
    assert not _core._get_madvise_hugepage()


@pytest.mark.parametrize(("value", "off"), [("1", False), ("0", True)])
def test_the_operators_setting_is_left_as_numpy_read_it(
        advice: None, monkeypatch: pytest.MonkeyPatch, value: str, off: bool) -> None:
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", value)
    assert _tune_memory() is off
    assert _core._get_madvise_hugepage()  # untouched: numpy applied it at import
