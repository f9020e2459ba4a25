"""The worker pins glibc's malloc thresholds unless the operator tuned malloc.

Behaviour is checked in fresh interpreters (thresholds are process-wide, and glibc's
dynamic rule depends on what a process freed before): four 4 MiB arrays alive together,
then freed, as a batch's temporaries are, fault their pages in every round where glibc's
rule has set the trim threshold to 8 MiB, and only in the first round once pinned.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from trainguard.pipeline.malloc_tuning import operator_tuned, pin_malloc_thresholds

_LOOP = """
import resource, sys
import numpy as np
from trainguard.pipeline.malloc_tuning import pin_malloc_thresholds
pinned = pin_malloc_thresholds() if sys.argv[1] == "pin" else None
np.ones(1).sum()  # numpy's own start-up allocations before counting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    held = [np.ones(512 * 1024) for _ in range(4)]  # 4 x 4 MiB alive at once
    del held
print(pinned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def _faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _LOOP, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True, timeout=60).stdout
    pinned, faults = out.split()
    return pinned, int(faults)


@glibc
def test_pinned_thresholds_stop_a_freed_array_from_faulting_in_again() -> None:
    pinned, faults = _faults("pin")
    _, unpinned = _faults("leave")
    assert pinned == "True"
    assert unpinned >= 40 * 1000  # thousands of pages (4 KiB) faulted in, round after round
    assert faults < 4 * 1024 + 1000  # the heap grows once, then reuses its pages


@glibc
def test_an_operators_malloc_setting_is_kept() -> None:
    pinned, faults = _faults("pin", MALLOC_MMAP_THRESHOLD_="131072")
    assert pinned == "False"
    assert faults >= 40 * 1000  # their 128 KiB threshold holds: mapped anew each round


@pytest.mark.parametrize(("env", "tuned"), [
    ({}, False),
    ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, False),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, True),
    ({"MALLOC_ARENA_MAX": "2"}, True),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, True),
])
def test_what_counts_as_the_operator_tuning_malloc(env: dict[str, str], tuned: bool) -> None:
    assert operator_tuned(env) is tuned


def test_an_operator_tuned_env_is_left_alone_without_calling_the_library() -> None:
    assert pin_malloc_thresholds({"MALLOC_TOP_PAD_": "0"}) is False


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainguard.pipeline import malloc_tuning

    monkeypatch.setattr(malloc_tuning, "_libc", lambda: "")
    assert pin_malloc_thresholds({}) is False
