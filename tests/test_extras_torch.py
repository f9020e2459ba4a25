"""The torch stack is its own extra, pinned, installed by `make test` and never by `install`."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=;!~]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]


def _pins() -> set[str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {_name(line) for line in lines if "==" in line and not line.startswith("#")}


def test_the_torch_test_extra_holds_the_frameworks_and_is_pinned():
    extra = _closure("torch-test")
    assert {"torch", "transformers", "accelerate", "lightning"} <= extra
    assert extra <= _pins()


def _closure(name: str) -> set[str]:
    """Every requirement an extra pulls, through ``trainguard[...]`` self-references."""
    found: set[str] = set()
    for requirement in _extras()[name]:
        inner = re.match(r"trainguard\[([^\]]*)\]", requirement)
        if inner:
            for extra in inner.group(1).split(","):
                found |= _closure(extra.strip())
        else:
            found.add(_name(requirement))
    return found


def test_no_light_extra_pulls_torch():
    for name in ("agent", "pipeline", "dev"):
        assert not _closure(name) & {"torch", "transformers", "accelerate", "lightning"}, name


def test_the_torch_extra_users_install_is_part_of_the_test_extra():
    assert "torch" in _closure("torch") and _closure("torch") <= _closure("torch-test")


def test_make_test_installs_the_torch_extra_and_install_does_not():
    makefile = (ROOT / "Makefile").read_text()
    targets = dict(re.findall(r"^([a-z-]+):([^\n]*)", makefile, flags=re.M))
    for target in ("test", "test-unit", "bench"):
        assert "install-torch" in targets[target].split("##")[0], target
    assert "install-torch" not in targets["install"] and "torch" not in targets["demo"]
    recipe = makefile.split("$(VENV)/.installed-torch:", 1)[1].split("\n\n", 1)[0]
    assert "-c constraints.txt" in recipe and "torch-test" in recipe
