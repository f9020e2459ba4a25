"""Benches that time the stages in-process run them with the worker's process settings."""

from __future__ import annotations

import platform
import subprocess
import sys

_PROBE = """
import gc, importlib
import numpy as np
from bench.as_worker import tune_like_worker
core = importlib.import_module("numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2
                               else "numpy.core.multiarray")
core._set_madvise_hugepage(True)
print(",".join(tune_like_worker()), core._get_madvise_hugepage(), gc.get_threshold()[0])
"""


def test_the_worker_settings_are_applied_in_a_fresh_process() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no NUMPY_MADVISE_HUGEPAGE, no malloc variables
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=120, env=env).stdout.split()
    applied, advice, threshold = out[0].split(","), out[1], int(out[2])
    assert applied[:2] == ["gc", "numpy-advice-off"] and advice == "False"
    assert threshold == 50_000
    assert ("malloc-pinned" in applied) == (platform.libc_ver()[0] == "glibc")
