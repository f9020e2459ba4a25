"""The shipped systemd units: valid for systemd, hardened, and working with the defaults."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainguard.agents.config_loader import load_agent_config

UNITS = Path(__file__).resolve().parents[2] / "infra" / "systemd"
NAMES = ["trainguard-agent.service", "trainguard-worker.service"]
EXEC = "/opt/trainguard/bin/trainguard"

#: Sandboxing both units carry: (key, value) as written.
HARDENING = {
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "ProtectSystem": "strict",
    "ProtectHome": "yes", "PrivateTmp": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectClock": "yes",
    "ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes", "SystemCallArchitectures": "native", "DynamicUser": "yes",
    "PrivateMounts": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "RestartPreventExitStatus": "2",
}


def _service(name: str) -> dict[str, list[str]]:
    """The [Service] section: every value of every key (systemd keys may repeat)."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          dict_type=_MultiDict, empty_lines_in_values=False,
                                          delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS / name)
    return {k: v.split("\n") for k, v in parser["Service"].items()}


class _MultiDict(dict):
    """Repeated keys keep every value, newline-joined (configparser keeps the last)."""

    def __setitem__(self, key, value):
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


@pytest.mark.parametrize("name", NAMES)
def test_both_units_carry_the_sandboxing_lines(name):
    service = _service(name)
    missing = {k: v for k, v in HARDENING.items() if v not in service.get(k, [])}
    assert missing == {}


def test_the_agent_is_a_notify_service_with_a_watchdog():
    service = _service(NAMES[0])
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30s"] and service["Restart"] == ["always"]


def test_the_worker_is_a_notify_service_with_a_watchdog():
    service = _service(NAMES[1])
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["60s"] and service["Restart"] == ["always"]


def test_the_agent_may_reach_the_gpus_and_nothing_else_in_dev():
    service = _service(NAMES[0])
    assert service["DevicePolicy"] == ["closed"]
    assert set(service["DeviceAllow"]) == {"char-nvidia* rw", "/dev/nvidiactl rw",
                                           "/dev/nvidia-uvm rw"}
    assert "PrivateDevices" not in service  # it would hide /dev/nvidia*
    assert service["SystemCallFilter"] == ["@system-service"]
    assert "video trainguard" in service["SupplementaryGroups"]


def test_the_agent_unit_holds_its_socket_and_its_spool():
    service = _service(NAMES[0])
    config = load_agent_config(UNITS.parent / "agent" / "agent.toml", {})
    runtime, state = service["RuntimeDirectory"][0], service["StateDirectory"][0]
    assert config.steps_socket is not None
    assert config.steps_socket.parent == Path("/run") / runtime
    assert Path("/var/lib") / state in config.spool_dir.parents


def test_the_worker_keeps_its_default_state_under_its_state_directory():
    service = _service(NAMES[1])
    assert service["StateDirectory"] == ["trainguard"]
    assert service["WorkingDirectory"] == ["/var/lib/trainguard"]
    # No --data-dir or --store on the command line: the relative defaults
    # (./trainguard-data/...) resolve under the working directory, which is writable.
    assert "--data-dir" not in service["ExecStart"][0]
    assert "--store" not in service["ExecStart"][0]


def _verifiable_copy(name: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify checks it)."""
    text = (UNITS / name).read_text()
    assert EXEC in text
    copy = tmp_path / name
    copy.write_text(text.replace(EXEC, sys.executable))
    return copy


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing on CI: install the systemd package")
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return tool


@pytest.mark.parametrize("name", NAMES)
def test_systemd_analyze_verify_finds_nothing_to_say(name, tmp_path):
    tool = _systemd_analyze()
    copy = _verifiable_copy(name, tmp_path)
    result = subprocess.run([tool, "verify", "--man=no", str(copy)], capture_output=True,
                            text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys and unparsable values, but names the file to warn.
    assert result.returncode == 0, result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if name in line]
    assert warnings == []


#: Highest exposure `systemd-analyze security` may score each unit (0-100 here, shown as
#: 0.0-10.0; the agent's unit before hardening scored 83, "EXPOSED").
EXPOSURE = {"trainguard-agent.service": 25, "trainguard-worker.service": 35}


@pytest.mark.parametrize("name", NAMES)
def test_systemd_analyze_security_rates_the_unit_ok(name, tmp_path):
    tool = _systemd_analyze()
    copy = _verifiable_copy(name, tmp_path)
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", f"--threshold={EXPOSURE[name]}",
         str(copy)], capture_output=True, text=True, timeout=60, check=False)
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, overall or result.stderr
