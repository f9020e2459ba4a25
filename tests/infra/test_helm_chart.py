"""The Helm chart and the container image: render, schema-check, and run what they configure.

No cluster and no Docker engine here: ``helm lint --strict`` and ``helm template`` render the
chart (checking values against ``values.schema.json``), ``kubecheck`` decodes every rendered
object strictly into its Kubernetes API type (unknown fields, wrong types: errors), and the
agent's and worker's own config loaders take what the chart hands them (the ConfigMap's
TOML, the env of the pod spec). Helm and kubecheck are built by ``make k8s-tools``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainguard import envvars
from trainguard.agents.config_loader import load_agent_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra" / "helm" / "trainguard"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
TOOLS = ROOT / ".tools" / "bin"


def _tool(name: str) -> str:
    path = TOOLS / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is not None:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing on CI: `make k8s-tools` builds it into .tools/bin")
    pytest.skip(f"{name} not built (`make k8s-tools`)")


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("helm"), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def _render(*sets: str) -> str:
    flags = [a for s in sets for a in ("--set", s)]
    result = _helm("template", "tg", str(CHART), *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _objects(text: str) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d
            for d in yaml.safe_load_all(text) if d}


SECURE = ("kafka.securityProtocol=SASL_SSL", "agent.kafkaPasswordSecret=agent-kafka",
          "worker.kafkaPasswordSecret=worker-kafka", "kafka.caSecret=kafka-ca",
          "worker.existingSecret=tg-secrets", "worker.authenticate=true",
          "worker.config=[alerts]", "agent.metricsPort=9465", "serviceMonitor.enabled=true",
          "agent.nodeKeyHostPath=/etc/trainguard/node.key",
          "worker.storeUrl=https://trainguard_worker@clickhouse:8443/trainguard",
          "worker.replicas=3")


def test_helm_lint_strict_passes():
    result = _helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("sets", [(), SECURE], ids=["defaults", "secure-server-store"])
def test_every_rendered_object_decodes_strictly_into_its_kubernetes_type(sets):
    text = _render(*sets)
    result = subprocess.run([_tool("kubecheck")], input=text, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 invalid" in result.stdout


def test_kubecheck_itself_rejects_an_unknown_field():
    bad = ("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  selector: {}\n"
           "  template:\n    spec:\n      hostPid: true\n      containers: []\n")
    result = subprocess.run([_tool("kubecheck")], input=bad, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1 and 'unknown field "spec.template.spec.hostPid"' in result.stdout


@pytest.mark.parametrize(("sets", "message"), [
    (("agent.bakend=nvml",), "additional properties 'bakend' not allowed"),
    (("kafka.securityProtocol=SASL",), "securityProtocol"),
    (("kafka.bootstrap=kafka",), "bootstrap"),
    (("worker.replicas=2",), "the embedded store has exactly one writer"),
    (("kafka.securityProtocol=SASL_SSL",), "kafkaPasswordSecret is required"),
])
def test_bad_values_stop_the_render_naming_the_field(sets, message):
    result = _helm("template", "tg", str(CHART), *[a for s in sets for a in ("--set", s)])
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_agent_runs_on_gpu_nodes_sees_host_pids_and_takes_no_gpu():
    ds = _objects(_render())["DaemonSet/tg-trainguard-agent"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (agent,) = pod["containers"]
    assert agent["args"] == ["agent"]
    assert "nvidia.com/gpu" not in json.dumps(agent["resources"])  # never takes a trainer's GPU
    assert agent["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    node = next(e for e in agent["env"] if e["name"] == envvars.NODE)
    assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    hosts = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert hosts["socket-dir"] == "/run/trainguard"


def test_the_node_key_comes_from_the_node_never_from_a_shared_secret():
    ds = _objects(_render(*SECURE))["DaemonSet/tg-trainguard-agent"]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["node-key"]["hostPath"] == {"path": "/etc/trainguard/node.key",
                                               "type": "File"}
    secrets = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    assert secrets == {"agent-kafka", "kafka-ca"}  # the Kafka login and CA, no node keys


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal env values, with the downward API's node name filled in."""
    out = {}
    for e in container["env"]:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        elif e["name"] == envvars.NODE:
            out[e["name"]] = "gpu-node-017"
    return out


def test_the_agent_config_the_chart_renders_loads_as_the_agent_would(tmp_path):
    objs = _objects(_render())
    toml = objs["ConfigMap/tg-trainguard-agent"]["data"]["agent.toml"]
    path = tmp_path / "agent.toml"
    path.write_text(toml)
    tomllib.loads(toml)
    (agent,) = objs["DaemonSet/tg-trainguard-agent"]["spec"]["template"]["spec"]["containers"]
    config = load_agent_config(path, _env(agent))
    assert config.node == "gpu-node-017" and config.cluster == "research-a"
    assert config.backend == "nvml" and config.kafka.bootstrap == "kafka:9092"
    assert str(config.steps_socket) == "/run/trainguard/steps.sock"
    assert config.steps_socket_group is None  # the socket is in the agent's own group


def test_the_worker_the_chart_configures_passes_its_own_check_config(tmp_path):
    sts = _objects(_render())["StatefulSet/tg-trainguard-worker"]
    (worker,) = sts["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINGUARD_")}
    env.update(_env(worker))
    env[envvars.WORKER_DATA_DIR] = str(tmp_path / "worker")
    result = subprocess.run([sys.executable, "-m", "trainguard.cli", *worker["args"],
                             "--check-config"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["bootstrap"] == "kafka:9092" and shown["metrics_port"] == 9464


def test_every_trainguard_variable_the_chart_sets_is_one_trainguard_reads():
    known = {v for k, v in vars(envvars).items() if k.isupper() and isinstance(v, str)}
    used = set(re.findall(r"\b(TRAINGUARD_[A-Z_]+|CREDENTIALS_DIRECTORY)\b",
                          "".join(p.read_text() for p in (CHART / "templates").iterdir())))
    assert used and used <= known, sorted(used - known)


def test_the_image_builds_from_files_that_exist_and_runs_unprivileged():
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]
    copies = [ln.split()[1] for ln in lines if ln.startswith("COPY ") and "--from" not in ln]
    assert copies and all((ROOT / c).exists() for c in copies), copies
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    default = next(ln for ln in lines if ln.startswith("ARG EXTRAS="))
    assert set(default.split("=", 1)[1].split(",")) <= set(extras)
    user = next(ln for ln in lines if ln.startswith("USER "))
    assert user.split()[1].isdigit() and user.split()[1] != "0"
    assert 'ENTRYPOINT ["trainguard"]' in lines
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".venv/" in ignored  # a 5 GB context otherwise
