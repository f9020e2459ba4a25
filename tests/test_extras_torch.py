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
    extra = {_name(r) for r in _extras()["torch-test"]}
    assert {"torch", "transformers", "accelerate", "lightning"} <= extra
    assert extra <= _pins()


def test_no_light_extra_pulls_torch():
    for name in ("agent", "pipeline", "dev"):
        assert not {_name(r) for r in _extras()[name]} & {"torch", "transformers", "lightning"}
        assert "torch-test" not in " ".join(_extras()[name])


def test_make_test_installs_the_torch_extra_and_install_does_not():
    makefile = (ROOT / "Makefile").read_text()
    targets = dict(re.findall(r"^([a-z-]+):([^\n]*)", makefile, flags=re.M))
    assert "install-torch" in targets["test"].split("##")[0]
    assert "install-torch" not in targets["install"] and "torch" not in targets["demo"]
    recipe = makefile.split("$(VENV)/.installed-torch:", 1)[1].split("\n\n", 1)[0]
    assert "-c constraints.txt" in recipe and "torch-test" in recipe
