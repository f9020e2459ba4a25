"""Loading the agent's configuration: TOML file, then environment, then command-line flags.

Later sources win. The TOML file is decoded strictly (a misspelt key is an error
naming it), and the result is validated once by :class:`~trainguard.agents.config.AgentConfig`.
Example ``/etc/trainguard/agent.toml``::

    cluster = "research-a"
    backend = "nvml"            # or "simulated"
    interval_s = 1.0
    node_key_file = "/etc/trainguard/node.key"   # `trainguard keys enrol`; mode 0600

    [kafka]
    bootstrap = "kafka-1:9092,kafka-2:9092"
    compression = "zstd"
    topic_prefix = "tg"
    security_protocol = "SASL_SSL"      # default PLAINTEXT
    sasl_mechanism = "SCRAM-SHA-512"
    username = "agent-gpu-17"
    password_file = "/etc/trainguard/kafka.password"   # or TRAINGUARD_KAFKA_PASSWORD
    ca_file = "/etc/trainguard/kafka-ca.pem"

    [spool]
    dir = "/var/lib/trainguard-agent/spool"
    max_mb = 256

    [steps]
    socket = "/run/trainguard/steps.sock"
    socket_mode = "0660"
    socket_group = "trainguard"
    files = ["/var/log/train/steps.jsonl"]
    rank_watch_interval_s = 0.25    # look at ranks' processes (exits, stops); 0: off

    [witness]
    checkpoint_dirs = ["/scratch/checkpoints"]
    code_paths = ["/home/alice/llama-train"]
    framework_paths = ["/opt/venv/lib/python3.12/site-packages/torch"]
    mb_per_s = 200

    [metrics]
    textfile_dir = "/var/lib/node_exporter/textfile_collector"   # node_exporter reads it
    # port = 9465                      # also serve /metrics (default: off)
    # addr = "127.0.0.1"               # default every interface
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from trainguard import envvars
from trainguard.agents.config import (
    AgentConfig,
    Compression,
    KafkaProducerSettings,
    WitnessSettings,
)
from trainguard.errors import ConfigError
from trainguard.schemas.kafka_security import KafkaSecurity
from trainguard.schemas.topics import Topics

__all__ = ["ENV_OVERRIDES", "load_agent_config"]


class _Kafka(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    bootstrap: str | None = None
    compression: Compression | None = None
    linger_ms: int | None = None
    retry_backoff_s: float | None = None
    retry_backoff_max_s: float | None = None
    topic_prefix: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class _Spool(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    dir: str | None = None
    max_mb: int | None = None


class _Steps(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    socket: str | None = None
    socket_mode: str | None = None
    socket_group: str | None = None
    files: list[str] = []
    rank_watch_interval_s: float | None = None


class _Witness(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    checkpoint_dirs: list[str] = []
    code_paths: list[str] = []
    framework_paths: list[str] = []
    mb_per_s: float | None = None
    max_file_mb: int | None = None
    code_interval_s: float | None = None
    scan_interval_s: float | None = None
    inotify: bool | None = None
    exclude: list[str] | None = None


class _Metrics(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    textfile_dir: str | None = None
    port: int | None = None
    addr: str | None = None


class _Simulated(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    gpus: int | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    cluster: str | None = None
    node: str | None = None
    backend: str | None = None
    interval_s: float | None = None
    heartbeat_interval_s: float | None = None
    node_key_file: str | None = None
    kafka: _Kafka = _Kafka()
    spool: _Spool = _Spool()
    steps: _Steps = _Steps()
    simulated: _Simulated = _Simulated()
    witness: _Witness = _Witness()
    metrics: _Metrics = _Metrics()


#: Environment variable → dotted setting it overrides.
ENV_OVERRIDES: dict[str, str] = {
    envvars.BOOTSTRAP: "kafka.bootstrap",
    envvars.TOPIC_PREFIX: "kafka.topic_prefix",
    envvars.CLUSTER: "cluster",
    envvars.NODE: "node",
    envvars.AGENT_BACKEND: "backend",
    envvars.INTERVAL_S: "interval_s",
    envvars.SPOOL_DIR: "spool.dir",
    envvars.SPOOL_MAX_MB: "spool.max_mb",
    envvars.STEPS_SOCKET: "steps.socket",
    envvars.SIM_GPUS: "simulated.gpus",
    envvars.KAFKA_SECURITY_PROTOCOL: "kafka.security_protocol",
    envvars.KAFKA_SASL_MECHANISM: "kafka.sasl_mechanism",
    envvars.KAFKA_USERNAME: "kafka.username",
    envvars.KAFKA_PASSWORD_FILE: "kafka.password_file",
    envvars.KAFKA_CA_FILE: "kafka.ca_file",
    envvars.KAFKA_CERT_FILE: "kafka.cert_file",
    envvars.KAFKA_KEY_FILE: "kafka.key_file",
    envvars.NODE_KEY_FILE: "node_key_file",
    envvars.AGENT_METRICS_TEXTFILE_DIR: "metrics.textfile_dir",
    envvars.AGENT_METRICS_PORT: "metrics.port",
    envvars.AGENT_METRICS_ADDR: "metrics.addr",
}


def load_agent_config(
    path: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Build the agent's validated configuration from file, environment and flags.

    The Kafka password is read from ``kafka.password_file`` or, without one, taken from
    the password variable in ``env``; no flag carries it.
    """
    settings: dict[str, Any] = {}
    if path is not None:
        _flatten(_read_file(path), "", settings)
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            settings[key] = env[var]
    for key, value in (overrides or {}).items():
        if value is not None:
            settings[key] = value
    return _build(settings, env.get(envvars.KAFKA_PASSWORD))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {str(path)!r}: {exc.strerror}") from None
    try:
        parsed = msgspec.toml.decode(raw, type=_File)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"agent config {str(path)!r}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"agent config {str(path)!r} is not valid TOML: {exc}") from None
    return msgspec.to_builtins(parsed)


def _flatten(doc: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in doc.items():
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{key}.", out)
        elif value is not None and value != []:
            out[f"{prefix}{key}"] = value


def _num(settings: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = settings.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r}") from None


def _security(s: Mapping[str, Any], password_env: str | None) -> KafkaSecurity:
    return KafkaSecurity.load(
        str(s.get("kafka.security_protocol", "PLAINTEXT")),
        mechanism=str(s.get("kafka.sasl_mechanism", "SCRAM-SHA-512")),
        username=str(s.get("kafka.username", "")),
        password_file=s.get("kafka.password_file"), password_env=password_env,
        ca_file=s.get("kafka.ca_file"), cert_file=s.get("kafka.cert_file"),
        key_file=s.get("kafka.key_file"))


def _build(s: Mapping[str, Any], password_env: str | None = None) -> AgentConfig:
    bootstrap = str(s.get("kafka.bootstrap", "127.0.0.1:9092"))
    mode_raw = str(s.get("steps.socket_mode", "0660"))
    try:
        mode = int(mode_raw, 8)
    except ValueError:
        raise ConfigError(
            f"steps.socket_mode must be octal like '0660', got {mode_raw!r}"
        ) from None
    socket_path = s.get("steps.socket")
    files = s.get("steps.files", [])
    kafka = KafkaProducerSettings(
        bootstrap=bootstrap,
        compression=s.get("kafka.compression", "zstd"),
        linger_ms=_num(s, "kafka.linger_ms", int, 20),
        retry_backoff_s=_num(s, "kafka.retry_backoff_s", float, 0.5),
        retry_backoff_max_s=_num(s, "kafka.retry_backoff_max_s", float, 30.0),
        security=_security(s, password_env),
    )
    fields: dict[str, Any] = {
        "kafka": kafka,
        "topics": Topics(str(s.get("kafka.topic_prefix", "tg"))),
        "backend": s.get("backend", "nvml"),
        "interval_s": _num(s, "interval_s", float, 1.0),
        "heartbeat_interval_s": _num(s, "heartbeat_interval_s", float, 5.0),
        "sim_gpus": _num(s, "simulated.gpus", int, 8),
        "spool_dir": Path(str(s.get("spool.dir", "./trainguard-data/agent-spool"))),
        "spool_max_bytes": _num(s, "spool.max_mb", int, 256) * 1024 * 1024,
        "steps_socket": Path(str(socket_path)) if socket_path else None,
        "steps_socket_mode": mode,
        "steps_socket_group": str(s["steps.socket_group"]) if s.get("steps.socket_group") else None,
        "steps_files": tuple(Path(str(f)) for f in files),
        "rank_watch_interval_s": _num(s, "steps.rank_watch_interval_s", float, 0.25),
        "witness": _witness(s),
    }
    for key in ("cluster", "node"):
        if key in s:
            fields[key] = str(s[key])
    if s.get("node_key_file"):
        fields["node_key_file"] = Path(str(s["node_key_file"]))
    if s.get("metrics.textfile_dir"):
        fields["metrics_textfile_dir"] = Path(str(s["metrics.textfile_dir"]))
    if "metrics.port" in s:
        fields["metrics_port"] = _num(s, "metrics.port", int, None)
    if s.get("metrics.addr"):
        fields["metrics_addr"] = str(s["metrics.addr"])
    return AgentConfig(**fields)


def _witness(s: Mapping[str, Any]) -> WitnessSettings:
    """The ``[witness]`` settings; unset ones keep :class:`WitnessSettings`' defaults."""
    defaults = WitnessSettings()
    fields: dict[str, Any] = {
        name: tuple(Path(str(p)) for p in s.get(f"witness.{name}", []))
        for name in ("checkpoint_dirs", "code_paths", "framework_paths")
    }
    for name, kind in (("mb_per_s", float), ("code_interval_s", float),
                       ("scan_interval_s", float)):
        fields[name] = _num(s, f"witness.{name}", kind, getattr(defaults, name))
    if "witness.max_file_mb" in s:
        fields["max_file_bytes"] = _num(s, "witness.max_file_mb", int, 0) * 1024 * 1024
    if "witness.inotify" in s:
        fields["inotify"] = bool(s["witness.inotify"])
    if "witness.exclude" in s:
        fields["exclude"] = tuple(str(p) for p in s["witness.exclude"])
    return WitnessSettings(**fields)
