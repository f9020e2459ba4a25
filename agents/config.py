"""The node agent's configuration: one frozen, validated object parsed once in ``main()``.

Built from file, environment and flags by :mod:`trainguard.agents.config_loader`.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trainguard.agents.reporter import MAX_REPORTED_DROPS
from trainguard.errors import ConfigError
from trainguard.metrics_http import DEFAULT_METRICS_ADDR, check_metrics_port
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity
from trainguard.schemas.topics import DEFAULT_PREFIX, Topics

__all__ = ["AgentConfig", "KafkaProducerSettings", "WitnessSettings"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$")
#: A POSIX group name (useradd's rule, with the trailing ``$`` of machine accounts).
_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}\$?$")
Compression = Literal["none", "gzip", "lz4", "zstd"]
_COMPRESSIONS = ("none", "gzip", "lz4", "zstd")


@dataclass(frozen=True)
class KafkaProducerSettings:
    """How the agent talks to Kafka: durable (acks=all, idempotent), compressed, batched."""

    bootstrap: str
    compression: Compression = "zstd"
    #: Sample batches are tiny and 1 Hz; a short linger batches a node's messages together
    #: without adding visible latency.
    linger_ms: int = 20
    request_timeout_ms: int = 15_000
    delivery_timeout_ms: int = 60_000
    #: The largest message the producer sends (kafka-python's default; the broker's
    #: ``message.max.bytes`` is about the same). Step batches are split below it.
    max_request_size: int = 1024 * 1024
    #: TLS and SASL settings (e.g. SASL_SSL as this node's agent user); default plain.
    security: KafkaSecurity = PLAINTEXT
    #: The sender's retry delays after a failed connect or delivery: full jitter, drawn
    #: from 0 up to ``retry_backoff_s * 2**failures``, at most ``retry_backoff_max_s``.
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise ConfigError("Kafka bootstrap servers are empty; expected host:port[,host:port]")
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"bad Kafka bootstrap server {server!r}; expected host:port")
        if self.compression not in _COMPRESSIONS:
            raise ConfigError(
                f"unknown compression {self.compression!r}; expected one of: "
                + ", ".join(_COMPRESSIONS)
            )
        if not 0 <= self.linger_ms <= 10_000:
            raise ConfigError(f"linger_ms must be within 0..10000, got {self.linger_ms}")
        if not 64 * 1024 <= self.max_request_size <= 64 * 1024 * 1024:
            raise ConfigError(
                f"max_request_size must be within 64 KiB..64 MiB, got {self.max_request_size}"
            )
        if not 0.01 <= self.retry_backoff_s <= self.retry_backoff_max_s <= 3600:
            raise ConfigError(
                f"retry backoff must satisfy 0.01 <= retry_backoff_s ({self.retry_backoff_s}) "
                f"<= retry_backoff_max_s ({self.retry_backoff_max_s}) <= 3600"
            )

    def producer_kwargs(self) -> dict[str, object]:
        """kafka-python ``KafkaProducer`` settings: durable, idempotent, compressed."""
        return {
            "bootstrap_servers": self.bootstrap.split(","),
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if self.compression == "none" else self.compression,
            "linger_ms": self.linger_ms,
            "request_timeout_ms": self.request_timeout_ms,
            "delivery_timeout_ms": self.delivery_timeout_ms,
            "max_request_size": self.max_request_size,
            "client_id": "trainguard-agent",
            **self.security.kafka_python_kwargs(),
        }


@dataclass(frozen=True)
class WitnessSettings:
    """The agent as a witness: what it hashes itself, and how much CPU it may spend on it."""

    #: Checkpoint files in these directories (and below) are hashed once closed after writing.
    checkpoint_dirs: tuple[Path, ...] = ()
    #: Code trees fingerprinted at start, at each new job and every ``code_interval_s``:
    #: the jobs' code, and installed frameworks' sources (e.g. ``.../site-packages/torch``).
    code_paths: tuple[Path, ...] = ()
    framework_paths: tuple[Path, ...] = ()
    #: Hashing budget in MB/s (0: unlimited); it bounds the witness's CPU.
    mb_per_s: float = 200.0
    #: Files larger than this are not hashed (reported as skipped, ``too_large``).
    max_file_bytes: int = 64 * 1024**3
    code_interval_s: float = 300.0
    #: How often checkpoint directories are rescanned where inotify is not used (or for
    #: files that appeared before a directory's watch): a file is hashed once its size and
    #: times are the same in two scans.
    scan_interval_s: float = 5.0
    #: Use inotify (close-after-write events) on Linux; else scan.
    inotify: bool = True
    #: Names (glob) left out of code fingerprints and checkpoint scans: Python writes
    #: bytecode caches beside sources at import.
    exclude: tuple[str, ...] = ("__pycache__", "*.pyc", ".git")
    #: Files one code tree may hold, and files the checkpoint directories may hold, before
    #: the rest are left out (counted).
    max_files: int = 200_000
    #: Reports waiting for the agent's tick; the oldest go (counted) beyond it.
    max_pending: int = 10_000

    @property
    def enabled(self) -> bool:
        """True when anything is configured to witness."""
        return bool(self.checkpoint_dirs or self.code_paths or self.framework_paths)

    def __post_init__(self) -> None:
        for path in (*self.checkpoint_dirs, *self.code_paths, *self.framework_paths):
            if not path.is_absolute():
                raise ConfigError(f"witness path {str(path)!r} must be absolute")
        if not 0 <= self.mb_per_s <= 100_000:
            raise ConfigError(f"witness mb_per_s must be within 0..100000, got {self.mb_per_s}")
        if self.max_file_bytes < 1:
            raise ConfigError(f"witness max_file_bytes must be >= 1, got {self.max_file_bytes}")
        for name in ("code_interval_s", "scan_interval_s"):
            if not 0.05 <= getattr(self, name) <= 86_400:
                raise ConfigError(f"witness {name} must be within 0.05..86400, "
                                  f"got {getattr(self, name)}")
        if self.max_files < 1 or self.max_pending < 1:
            raise ConfigError(f"witness max_files ({self.max_files}) and max_pending "
                              f"({self.max_pending}) must be >= 1")


@dataclass(frozen=True)
class AgentConfig:
    """Everything one node agent needs; validated on construction."""

    kafka: KafkaProducerSettings
    cluster: str = "default"
    node: str = field(default_factory=socket.gethostname)
    topics: Topics = field(default_factory=lambda: Topics(DEFAULT_PREFIX))
    interval_s: float = 1.0
    heartbeat_interval_s: float = 5.0
    backend: Literal["nvml", "simulated"] = "simulated"
    sim_gpus: int = 8
    #: The on-disk spool that rides out Kafka outages and agent restarts.
    spool_dir: Path = Path("./trainguard-data/agent-spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    #: Records held in memory while the spool's disk refuses writes (full, I/O errors).
    spool_memory_max_bytes: int = 32 * 1024 * 1024
    #: The node's dead-letter file (under the spool directory): messages that can never be
    #: sent (refused by Kafka for good, or too large), at most this many bytes on disk.
    dead_letter_max_bytes: int = 64 * 1024 * 1024
    #: Unix datagram socket where trainers' ``trainguard.agents.reporter`` hands step records.
    steps_socket: Path | None = None
    #: Permission bits of the step socket: owner and group may send, nobody else.
    steps_socket_mode: int = 0o660
    #: Group given the step socket (trainers' users join it); ``None`` keeps the agent's.
    steps_socket_group: str | None = None
    #: Reporters (pid, job, rank) whose drop counts the step intake remembers; beyond it
    #: the least recently heard is forgotten (counted as ``reporters_evicted``).
    intake_max_reporters: int = 4096
    #: A reporter's drop count above this is not believed: the datagram is malformed.
    intake_max_reported_drops: int = MAX_REPORTED_DROPS
    #: Seconds between the rank watch's looks at the processes bound to ranks on the step
    #: socket (exits, stops and resumes are reported with the job's steps); 0 turns it off.
    rank_watch_interval_s: float = 0.25
    #: JSON-lines files written by trainers that only log, tailed every tick.
    steps_files: tuple[Path, ...] = ()
    #: What the agent hashes itself (checkpoint files, code trees): off until configured.
    witness: WitnessSettings = field(default_factory=WitnessSettings)
    #: This node's key (``trainguard keys enrol``, mode 0600): every message the agent
    #: sends carries a MAC made with it. ``None``: messages go unsigned.
    node_key_file: Path | None = None
    #: node_exporter's textfile-collector directory: ``trainguard_agent.prom`` is rewritten
    #: there after each heartbeat. ``None``: no file.
    metrics_textfile_dir: Path | None = None
    #: Serve the same metrics on ``http://metrics_addr:metrics_port/metrics``; ``None``: off.
    metrics_port: int | None = None
    metrics_addr: str = DEFAULT_METRICS_ADDR

    def __post_init__(self) -> None:
        check_metrics_port("metrics.port", self.metrics_port)
        for name in ("cluster", "node"):
            value = getattr(self, name)
            if not _NAME.match(value):
                raise ConfigError(
                    f"bad {name} name {value!r}; expected 1-256 of letters, digits, "
                    "'.', '_', ':', '-'"
                )
        if not 0.1 <= self.interval_s <= 3600:
            raise ConfigError(f"interval_s must be within 0.1..3600, got {self.interval_s}")
        if self.heartbeat_interval_s < self.interval_s:
            raise ConfigError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be >= "
                f"interval_s ({self.interval_s})"
            )
        if not 1 <= self.sim_gpus <= 256:
            raise ConfigError(f"sim_gpus must be within 1..256, got {self.sim_gpus}")
        if self.backend not in ("nvml", "simulated"):
            raise ConfigError(f"unknown backend {self.backend!r}; expected one of: nvml, simulated")
        if self.spool_max_bytes < 1024 * 1024:
            raise ConfigError(f"spool max must be at least 1 MB, got {self.spool_max_bytes} bytes")
        for name in ("spool_memory_max_bytes", "dead_letter_max_bytes"):
            if getattr(self, name) < 1024 * 1024:
                raise ConfigError(f"{name} must be at least 1 MB, got {getattr(self, name)}")
        if self.intake_max_reporters < 1 or self.intake_max_reported_drops < 1:
            raise ConfigError(
                f"intake_max_reporters ({self.intake_max_reporters}) and "
                f"intake_max_reported_drops ({self.intake_max_reported_drops}) must be >= 1"
            )
        if self.rank_watch_interval_s != 0 and not 0.01 <= self.rank_watch_interval_s <= 60:
            raise ConfigError(
                f"rank_watch_interval_s must be 0 (off) or within 0.01..60, "
                f"got {self.rank_watch_interval_s}"
            )
        if not 0 <= self.steps_socket_mode <= 0o777:
            raise ConfigError(
                f"steps_socket_mode {self.steps_socket_mode:o} is not a permission mode; "
                "expected octal 0..777 like 0660"
            )
        if self.steps_socket_group is not None and not _GROUP.match(self.steps_socket_group):
            raise ConfigError(
                f"bad steps_socket_group {self.steps_socket_group!r}; expected a group name "
                "(letters, digits, '.', '_', '-'; at most 32)"
            )
        if self.steps_socket is not None and len(str(self.steps_socket)) > 100:
            raise ConfigError(
                f"steps socket path {str(self.steps_socket)!r} is too long for a Unix socket "
                "(100 characters at most)"
            )
