"""Helpers for the detector tests: feed a bank tick by tick."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from trainguard.pipeline.detect import Detection, DetectorBank

Feed = Callable[..., list[Detection]]


def feed_bank(bank: DetectorBank, values: np.ndarray, t0: float = 0.0,
              rows: np.ndarray | None = None) -> list[Detection]:
    """Feed ``values`` (ticks x rows, or one series) one tick per second of event time."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    rows = np.arange(values.shape[1]) if rows is None else np.asarray(rows)
    found: list[Detection] = []
    for k, tick in enumerate(values):
        found += bank.update(rows, tick, np.full(len(rows), t0 + k))
    return found


@pytest.fixture
def feed() -> Feed:
    return feed_bank


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)
