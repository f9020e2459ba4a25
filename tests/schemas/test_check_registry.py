"""The schema's registry of check names is the one list: the checks emit exactly its names."""

import re
import typing
from pathlib import Path

import pytest

from trainguard.schemas.records import CHECK_NAMES, CheckName, check_name

ROOT = Path(__file__).resolve().parents[2]
CONSISTENCY = ROOT / "pipeline" / "consistency"
#: Checks decided before the consistency stage: ``forged_telemetry`` at ingest.
INGEST_CHECKS = (ROOT / "pipeline" / "auth.py",)
# `check="name"` on a Fault or Finding and `.update("name", ...)` on a FindingTracker.
_EMITTED = re.compile(r'check="(\w+)"|\.update\(\s*"(\w+)"')


def _emitted_names() -> set[str]:
    names: set[str] = set()
    for path in [*CONSISTENCY.glob("*.py"), *INGEST_CHECKS]:
        for match in _EMITTED.finditer(path.read_text()):
            names.add(next(g for g in match.groups() if g))
    return names


def test_every_check_the_consistency_code_emits_is_registered():
    emitted = _emitted_names()
    assert len(emitted) >= 10, "the scan must see the checks"
    assert emitted - set(CHECK_NAMES) == set()


def test_every_registered_check_is_emitted_by_the_consistency_or_ingest_code():
    assert set(CHECK_NAMES) - _emitted_names() == set()


def test_the_registry_is_the_literal_s_values_sorted_and_unique():
    assert CHECK_NAMES == typing.get_args(CheckName)
    assert list(CHECK_NAMES) == sorted(set(CHECK_NAMES))


def test_every_registered_check_has_a_runbook():
    runbooks = {p.stem for p in (ROOT / "docs" / "runbooks").glob("*.md")}
    assert set(CHECK_NAMES) - runbooks == set()


def test_every_registered_check_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    assert {c for c in CHECK_NAMES if f"`{c}`" not in readme} == set()


def test_check_name_accepts_a_registered_name():
    assert check_name("straggler") == "straggler"


def test_check_name_rejects_an_unknown_name_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown check 'stragler'; expected one of: .*straggler"):
        check_name("stragler")
