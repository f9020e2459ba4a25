"""infra/prometheus: the alerting rules pass promtool, their unit tests pass, and every
trainguard metric they use is one the worker or the agent exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.agents.test_metrics import _heartbeat
from tests.pipeline.test_metrics import _sample
from trainguard.agents.metrics import AgentMetrics
from trainguard.pipeline.metrics import WorkerMetrics
from trainguard.schemas.records import AgentCounters

PROMETHEUS = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
RULES = PROMETHEUS / "trainguard.rules.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = ("promtool not found: it comes from Debian's prometheus package "
                   "(`make prometheus` installs it)")
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the rule checks")
        pytest.skip(message)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=PROMETHEUS)


def test_the_rules_pass_promtool_check_rules() -> None:
    out = _run("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 14 rules found" in out.stdout


def test_the_rules_unit_tests_pass() -> None:
    out = _run("test", "rules", "tests/trainguard.rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_example_scrape_config_passes_promtool_check_config() -> None:
    out = _run("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def _exported() -> set[str]:
    worker = WorkerMetrics("w:1", process=False)
    worker.update(_sample())
    agent = AgentMetrics()
    agent.update(_heartbeat(**{f: 1 for f in AgentCounters.__struct_fields__}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(agent)
    text = generate_latest(worker.registry).decode() + generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_trainguard_metric_the_rules_use_is_exported() -> None:
    used = set(re.findall(r"\btrainguard_[a-z0-9_]+", RULES.read_text()))
    used -= {"trainguard_agent"}  # the textfile's name in a regex, not a metric
    assert used, "the rules use trainguard's metrics"
    assert used - _exported() == set()
