from pathlib import Path

from trainguard.agents.config_loader import load_agent_config

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_the_shipped_example_agent_config_is_valid():
    config = load_agent_config(INFRA / "agent" / "agent.toml", {})
    assert config.backend == "nvml"
    assert config.steps_socket == Path("/run/trainguard/steps.sock")
    assert config.steps_socket_mode == 0o660 and config.steps_socket_group == "trainguard"
    assert config.kafka.bootstrap.count(",") == 2


def test_the_systemd_unit_points_at_the_config_and_runs_unprivileged():
    unit = (INFRA / "systemd" / "trainguard-agent.service").read_text()
    assert "TRAINGUARD_AGENT_CONFIG=/etc/trainguard/agent.toml" in unit
    assert "DynamicUser=yes" in unit and "NoNewPrivileges=yes" in unit
    assert "RuntimeDirectory=trainguard" in unit  # holds the steps socket
