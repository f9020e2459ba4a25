"""Process settings as the worker makes them, for benches that run its stages in-process.

The worker tunes its own process before the first batch (``pipeline/worker.py``): the
cyclic GC, numpy's huge-page advice, glibc's malloc thresholds. A bench that times the
stages without them measures another process: with numpy's advice on, the first tick of
10,000 nodes took 154 µs a message in-process where the worker's settings give ~95
(BENCHMARKS.md, round 16). :func:`tune_like_worker` applies what the checkout on the path
has, so the same bench compares code versions back to back, each as its worker runs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["tune_like_worker"]


def tune_like_worker() -> list[str]:
    """Apply the worker's process settings that this checkout has; return their names."""
    worker: Any = importlib.import_module("trainguard.pipeline.worker")
    worker._tune_gc()
    applied = ["gc"]
    tune_memory = getattr(worker, "_tune_memory", None)
    if tune_memory is not None and tune_memory():
        applied.append("numpy-advice-off")
    try:
        malloc: Any = importlib.import_module("trainguard.pipeline.malloc_tuning")
    except ImportError:  # a checkout from before round 16
        return applied
    if malloc.pin_malloc_thresholds():
        applied.append("malloc-pinned")
    return applied
