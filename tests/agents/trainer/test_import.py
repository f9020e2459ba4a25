"""The trainer kit is optional: importing the agent side never imports torch."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_importing_the_agent_side_and_the_kit_itself_does_not_import_torch():
    code = (
        "import sys\n"
        "import trainguard.agents, trainguard.agents.reporter, trainguard.agents.daemon\n"
        "import trainguard.agents.trainer as kit\n"
        "kit.TrainGuard, kit.Layout, kit.ParamChecksum\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_of_the_kit_raises_attribute_error():
    import trainguard.agents.trainer as kit

    try:
        kit.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
