"""What ``pip install trainguard`` puts on a machine: one import package, nothing else.

The wheel is built offline from this checkout (hatchling, no build isolation), installed
into a bare target directory, and a training script that has its own ``schemas.py``,
``pipeline.py`` and ``agents/`` imports the step reporter from it and reports a step.
"""

import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import msgspec
import pytest

from trainguard.agents.reporter import StepDatagram

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (built,) = out.glob("trainguard-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return target


def test_the_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"trainguard", "trainguard-0.1.0.dist-info"}
    # The repository's top-level folders are inside the namespace, with their data files.
    for path in ("trainguard/agents/reporter.py", "trainguard/pipeline/worker.py",
                 "trainguard/schemas/records.py", "trainguard/schemas/sql/001_sample_batches.sql",
                 "trainguard/_infra/kafka/pom.xml", "trainguard/_infra/clickhouse/grants.sql",
                 "trainguard/py.typed"):
        assert path in names


def test_installing_puts_only_trainguard_into_site_packages(site):
    assert {p.name for p in site.iterdir()} == {"trainguard", "trainguard-0.1.0.dist-info",
                                                "bin"}  # bin: the console script (--target)


_TRAIN = """
import sys
import agents, pipeline, schemas  # the training repository's own modules
assert schemas.MINE and pipeline.MINE and agents.MINE, "user modules shadowed"
from trainguard.agents.reporter import StepReporter
import trainguard
assert trainguard.__file__.startswith(sys.argv[2]), trainguard.__file__
reporter = StepReporter("job-1", rank=0, world_size=1, socket_path=sys.argv[1], node="n1")
assert reporter.report(7, loss=1.25, lr=3e-4), "not handed over"
"""


def test_a_training_repo_with_its_own_schemas_pipeline_and_agents_reports_a_step(
        site, tmp_path):
    repo = tmp_path / "my-training-repo"
    (repo / "agents").mkdir(parents=True)
    (repo / "agents" / "__init__.py").write_text("MINE = True\n")
    (repo / "schemas.py").write_text("MINE = True\n")
    (repo / "pipeline.py").write_text("MINE = True\n")
    (repo / "train.py").write_text(_TRAIN)
    sock_path = str(tmp_path / "steps.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as agent:
        agent.bind(sock_path)
        agent.settimeout(10)
        # -S: no site-packages processing, so this checkout's editable install is not on the
        # path; msgspec comes from its own directory, trainguard only from the wheel.
        msgspec_dir = str(Path(msgspec.__file__).resolve().parents[1])
        run = subprocess.run(
            [sys.executable, "-S", "train.py", sock_path, str(site)], cwd=repo,
            env={"PYTHONPATH": f"{site}:{msgspec_dir}"}, capture_output=True, text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        datagram = msgspec.json.decode(agent.recv(65536), type=StepDatagram)
    assert datagram.step is not None
    assert (datagram.step.job_id, datagram.step.step, datagram.step.loss) == ("job-1", 7, 1.25)
