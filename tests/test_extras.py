"""The agent install stays light: no stream-processing or store dependencies on GPU nodes."""

import re
import subprocess
import sys
from importlib.metadata import requires

HEAVY = {"faust-streaming", "numpy", "chdb", "clickhouse-connect", "aiokafka", "grafana-client"}


def _extra(name):
    reqs = requires("trainguard") or []
    return {
        re.split(r"[\s\[<>=;!~]", r, maxsplit=1)[0].lower()
        for r in reqs
        if re.search(rf"extra == ['\"]{name}['\"]", r)
    }


def test_agent_extra_pulls_none_of_the_pipeline_dependencies():
    agent = _extra("agent")
    assert {"kafka-python", "nvidia-ml-py", "msgspec"} <= agent
    assert not agent & HEAVY


def test_pipeline_extra_has_what_the_worker_needs():
    assert {"faust-streaming", "numpy", "chdb", "clickhouse-connect"} <= _extra("pipeline")


def test_the_cli_and_the_agent_path_import_no_heavy_module():
    code = (
        "import sys, trainguard.cli, trainguard.agents.daemon, trainguard.agents.fleet,"
        " trainguard.agents.transport;"
        "trainguard.cli.build_parser();"
        "heavy = [m for m in ('faust', 'numpy', 'chdb', 'clickhouse_connect', 'aiokafka')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
