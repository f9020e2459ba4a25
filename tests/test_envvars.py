"""Environment variable names live in one place: ``trainguard.envvars``."""

import re
from pathlib import Path

from trainguard import envvars

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"""["'](TRAINGUARD_[A-Z0-9_]+)["']""")


def _sources() -> list[Path]:
    roots = [ROOT / d for d in ("agents", "pipeline", "schemas", "trainguard", "bench")]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def test_no_module_but_envvars_spells_a_trainguard_variable_name():
    own = ROOT / "trainguard" / "envvars.py"
    spelt = {f"{p.relative_to(ROOT)}: {m}" for p in _sources() if p != own
             for m in _NAME.findall(p.read_text())}
    assert spelt == set()


def test_every_name_in_all_is_an_upper_case_variable_name():
    for name in envvars.__all__:
        value = getattr(envvars, name)
        assert isinstance(value, str) and value.isupper(), name


def test_every_trainguard_variable_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    names = {getattr(envvars, n) for n in envvars.__all__}
    missing = {n for n in names if n.startswith("TRAINGUARD_") and f"`{n}`" not in readme}
    assert missing == set()
