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
from trainguard.schemas.topics import DEFAULT_PREFIX, Topics

__all__ = ["AgentConfig", "KafkaProducerSettings"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$")
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
        }


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
    steps_socket_mode: int = 0o660
    #: Reporters (pid, job, rank) whose drop counts the step intake remembers; beyond it
    #: the least recently heard is forgotten (counted as ``reporters_evicted``).
    intake_max_reporters: int = 4096
    #: A reporter's drop count above this is not believed: the datagram is malformed.
    intake_max_reported_drops: int = MAX_REPORTED_DROPS
    #: JSON-lines files written by trainers that only log, tailed every tick.
    steps_files: tuple[Path, ...] = ()
    #: This node's key (``trainguard keys enrol``, mode 0600): every message the agent
    #: sends carries a MAC made with it. ``None``: messages go unsigned.
    node_key_file: Path | None = None

    def __post_init__(self) -> None:
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
        if self.steps_socket is not None and len(str(self.steps_socket)) > 100:
            raise ConfigError(
                f"steps socket path {str(self.steps_socket)!r} is too long for a Unix socket "
                "(100 characters at most)"
            )
