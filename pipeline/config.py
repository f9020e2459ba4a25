"""The stream worker's configuration: one frozen, validated object parsed once in ``main()``.

Its TOML file (the alerting section) is read by :mod:`trainguard.pipeline.config_loader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trainguard.errors import ConfigError
from trainguard.metrics_http import DEFAULT_METRICS_ADDR, check_metrics_port
from trainguard.pipeline.alerts.config import AlertLifecycleConfig
from trainguard.pipeline.alerts.receivers import ReceiverConfig
from trainguard.pipeline.alerts.severity import DEFAULT_SEVERITY_LABELS, SeverityLabels
from trainguard.pipeline.caps import DEFAULT_MAX_WORLD_SIZE, IngestCaps
from trainguard.pipeline.consistency.config import DEFAULT_MAX_JOBS
from trainguard.pipeline.detect.registry import DEFAULT_MAX_ENTITIES
from trainguard.pipeline.store.url import StoreUrl
from trainguard.schemas.kafka_security import PLAINTEXT, KafkaSecurity
from trainguard.schemas.topics import DEFAULT_PREFIX, Topics

__all__ = ["DEFAULT_APP_ID", "AlertingConfig", "WorkerConfig"]

#: The Faust app id (and Kafka consumer group) of workers that are not told another.
DEFAULT_APP_ID = "trainguard-worker"


@dataclass(frozen=True)
class AlertingConfig:
    """The worker's alerting section: whether its alert jobs run, their lifecycle, receivers.

    Read from the worker's TOML file (``[alerts]`` and ``[[receivers]]``); the lifecycle's
    own thresholds are :class:`~trainguard.pipeline.alerts.config.AlertLifecycleConfig`.
    """

    #: Turn findings into alerts (topic and table). Off: findings are only recorded.
    enabled: bool = True
    lifecycle: AlertLifecycleConfig = field(default_factory=AlertLifecycleConfig)
    #: Where alert state changes are delivered; none: alerts go to the topic and table only.
    receivers: tuple[ReceiverConfig, ...] = ()
    #: How often active silences are re-read from the store (wall-clock seconds).
    silences_every_s: float = 10.0
    #: The label value receivers get for page / ticket / info (``critical`` / ``warning`` /
    #: ``info``, what existing routing trees route on); each receiver starts from these.
    severity_labels: SeverityLabels = DEFAULT_SEVERITY_LABELS

    def __post_init__(self) -> None:
        """Reject values the stream jobs cannot run with, naming the field."""
        if not 0.5 <= self.silences_every_s <= 3600:
            raise ConfigError(
                f"silences_every_s={self.silences_every_s!r}; expected 0.5..3600 seconds")

_APP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one stream worker needs; validated on construction."""

    bootstrap: str
    store: StoreUrl
    topics: Topics = field(default_factory=lambda: Topics(DEFAULT_PREFIX))
    #: How the worker's Kafka clients (Faust, admin, state reader) authenticate.
    security: KafkaSecurity = PLAINTEXT
    #: Faust application id: also the Kafka consumer group of the workers sharing the work.
    app_id: str = DEFAULT_APP_ID
    partitions: int = 3
    #: Replicas of the topics the worker creates; ``None``: from the brokers (their
    #: ``default.replication.factor`` if set, else min(3, brokers); see
    #: :func:`~trainguard.pipeline.kafka_admin.choose_replication_factor`).
    replication_factor: int | None = None
    #: One batch (one ``getmany`` of the raw consumer, one store write) holds at most this
    #: many messages; a poll waits at most ``batch_within_s`` for the first message and
    #: returns what has arrived, so without a backlog batches stay small and a fault's first
    #: sample reaches the checks at once. Under a backlog they fill to ``batch_max``: larger
    #: inserts make fewer, larger ClickHouse parts, and 8,000 drained 1.4-1.5x the messages
    #: per second of 2,000 at a third less CPU per message; 16,000 cut the embedded store's
    #: CPU per message by another sixth (its merges by 40 %) and stored 8-15 % more per
    #: second at 5,000 nodes in real time (BENCHMARKS.md, issue #17).
    batch_max: int = 16000
    batch_within_s: float = 0.2
    #: After a poll returned messages, how long the batch keeps collecting (up to
    #: ``batch_max``) before it is handled. Agents report once a second at about the same
    #: time, so a poll returns part of a tick: lingering makes one batch of it, one store
    #: insert per table instead of several, at up to this much more latency (at 500 nodes
    #: ~7 % less CPU per GPU sample with 0.3 s, BENCHMARKS.md, issue #17). 0: off.
    batch_linger_s: float = 0.2
    #: The most bytes one fetch reads of one raw partition (Kafka's
    #: ``max.partition.fetch.bytes``; a larger first record batch still comes whole). Each
    #: node's message is a record batch of its own, ~1 kB compressed, so the consumer's
    #: 1 MiB default made a 16,000-message batch of several fetch round trips per partition:
    #: at 10,000 nodes on 3 partitions, 8 MiB drained 1.2x the messages per second of 1 MiB
    #: at ~15 % less CPU per message (BENCHMARKS.md, issue #17). A fetch response holds at
    #: most 50 MiB (aiokafka's ``fetch_max_bytes``) whatever this is.
    max_partition_fetch_bytes: int = 8 * 1024 * 1024
    #: The ``nice`` value of the embedded store's merge threads (chdb merges on threads of
    #: this process): a merge takes a whole core for seconds at 10,000 nodes, and at 19 it
    #: takes idle CPU and yields to the event loop. In real time at 5,000 nodes the anomaly
    #: reached its topic at p99 0.98 and 0.76 s against 1.92 and 1.38 s at 0 (two pairs);
    #: a backlog drains as fast either way (BENCHMARKS.md, issue #17, round 15). 0: as the
    #: worker's own threads. A ClickHouse server merges on its own machine (its
    #: ``os_threads_nice_value_merge_mutate``).
    store_merge_nice: int = 19
    #: How long a failing store write is retried (with backoff) before the store is declared
    #: down (an error line, ``store_down`` in pipeline_health); the worker then stays up,
    #: paused, and keeps retrying until the store is back.
    store_retry_s: float = 600.0
    #: A worker that stops heartbeating for this long loses its partitions to the others.
    #: Short enough that a killed worker's partitions move within seconds.
    session_timeout_s: float = 10.0
    #: Run the baseline detectors (per GPU and per rank) on the input.
    detect: bool = True
    #: Run the cross-rank / cross-node consistency checks per job.
    consistency: bool = True
    #: Findings → alerts → receivers.
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    #: How often (wall clock) detector state is snapshotted to the compacted state topic, at
    #: least: see ``state_max_share``.
    state_every_s: float = 5.0
    #: The most of the worker's time snapshots may take: a round that took t seconds to
    #: export and send delays the next by t / share or more. At 10,000 nodes a round is
    #: hundreds of MB and ~1.5 s, so the next comes ~30 s later (at most ~30 s of points a
    #: failover does not restore); a small fleet snapshots every ``state_every_s``.
    state_max_share: float = 0.05
    #: How often (wall clock) the worker writes its own health to ``pipeline_health``.
    health_every_s: float = 5.0
    #: Where the worker writes its state (Faust tables) and, for chdb, its owner file.
    data_dir: str = "./trainguard-data/worker"
    #: Step records of a larger world are dead letters (``cap_world_size``): generous, a
    #: bound on forgeries, not on jobs. The consistency stage holds state only for ranks
    #: that report, whatever the world size.
    max_world_size: int = DEFAULT_MAX_WORLD_SIZE
    #: Entities (GPUs, and ranks) whose baselines one worker keeps, per kind; past it the
    #: least recently seen is evicted (counted). 10,000 nodes x 8 GPUs, with headroom.
    max_baseline_entities: int = DEFAULT_MAX_ENTITIES
    #: Jobs the consistency stage tracks at once; past it the least recently seen is
    #: evicted (counted).
    max_jobs: int = DEFAULT_MAX_JOBS
    #: A node running a job whose agent sent no heartbeat for this long (event time) pages
    #: (``agent_silent``): agents heartbeat every 5 s, so 8 s pages within 10 s.
    agent_silent_s: float = 8.0
    #: A record's ``ts`` may run this far ahead of its Kafka timestamp (the producer's or
    #: broker's clock), and that timestamp this far ahead of the worker's clock; beyond,
    #: the record is a dead letter (reason ``clock``). Agents stamp both from one clock, so
    #: 10 minutes only forgives a badly skewed node; replays of simulated time (eval, the
    #: accelerated demo) raise it.
    max_future_s: float = 600.0
    #: ...and this far behind it: a node's spool holds records for days while Kafka is
    #: unreachable, and sends them late with their own time.
    max_past_s: float = 7 * 86400.0
    #: The fleet secrets file (``trainguard keys init``): every input message's MAC is
    #: verified against keys derived from it (see ``schemas/auth.py``).
    fleet_secret_file: str | None = None
    #: Refuse (dead letter ``unauthenticated``, ``forged_telemetry`` finding) what does not
    #: verify. ``None``: required when ``fleet_secret_file`` is set; ``False`` with a file
    #: only counts failures (a rollout while agents are being enrolled).
    require_auth: bool | None = None
    #: A ``forged_telemetry`` finding for the same (claimed, real) source pair is repeated,
    #: with the running count, at most this often (wall-clock seconds).
    forged_repeat_s: float = 300.0
    #: Serve Prometheus metrics on ``http://metrics_addr:metrics_port/metrics``; ``None``:
    #: off (several workers may share a host). 9464 is the documented choice; 0: any port.
    metrics_port: int | None = None
    metrics_addr: str = DEFAULT_METRICS_ADDR

    def __post_init__(self) -> None:
        check_metrics_port("metrics_port", self.metrics_port)
        if self.require_auth and not self.fleet_secret_file:
            raise ConfigError("require_auth needs a fleet secret file (--fleet-secret-file); "
                              "none is set")
        if not 1 <= self.forged_repeat_s <= 86400:
            raise ConfigError(
                f"forged_repeat_s must be within 1..86400 seconds, got {self.forged_repeat_s!r}")
        if not self.bootstrap.strip():
            raise ConfigError("Kafka bootstrap servers are empty; expected host:port[,host:port]")
        if not _APP_ID.match(self.app_id):
            raise ConfigError(
                f"bad app id {self.app_id!r}; expected letters, digits, '.', '_', '-'"
            )
        if not 1 <= self.partitions <= 1024:
            raise ConfigError(f"partitions must be within 1..1024, got {self.partitions}")
        if self.replication_factor is not None and not 1 <= self.replication_factor <= 16:
            raise ConfigError(
                f"replication_factor must be within 1..16, got {self.replication_factor}"
            )
        if not 1 <= self.batch_max <= 1_000_000:
            raise ConfigError(f"batch_max must be within 1..1000000, got {self.batch_max}")
        if not 3 <= self.session_timeout_s <= 300:
            raise ConfigError(
                f"session_timeout_s must be within 3..300, got {self.session_timeout_s}"
            )
        for name in ("max_future_s", "max_past_s"):
            value = getattr(self, name)
            if not 1 <= value <= 100 * 365 * 86400:
                raise ConfigError(f"{name} must be within 1..3153600000 seconds, got {value!r}")
        if not 0.01 <= self.state_max_share <= 0.5:
            raise ConfigError(
                f"state_max_share must be within 0.01..0.5, got {self.state_max_share!r}")
        if not 0.01 <= self.batch_within_s <= 60:
            raise ConfigError(f"batch_within_s must be within 0.01..60, got {self.batch_within_s}")
        if not 0 <= self.batch_linger_s <= 5:
            raise ConfigError(f"batch_linger_s must be within 0..5, got {self.batch_linger_s!r}")
        if not (isinstance(self.max_partition_fetch_bytes, int)
                and 65536 <= self.max_partition_fetch_bytes <= 256 * 1024 * 1024):
            raise ConfigError("max_partition_fetch_bytes must be an integer within "
                              f"65536..268435456, got {self.max_partition_fetch_bytes!r}")
        if not (isinstance(self.store_merge_nice, int) and 0 <= self.store_merge_nice <= 19):
            raise ConfigError("store_merge_nice must be an integer within 0..19, got "
                              f"{self.store_merge_nice!r}")
        IngestCaps(max_world_size=self.max_world_size)  # validates it
        if not 0.5 <= self.agent_silent_s <= 86400:
            raise ConfigError(
                f"agent_silent_s must be within 0.5..86400 seconds, got {self.agent_silent_s!r}"
            )
        for name in ("max_baseline_entities", "max_jobs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def auth_required(self) -> bool:
        """Whether unauthenticated input is refused."""
        if self.require_auth is None:
            return self.fleet_secret_file is not None
        return self.require_auth

    @property
    def broker_urls(self) -> list[str]:
        """Bootstrap servers in Faust's ``kafka://host:port`` form."""
        return [f"kafka://{s.strip()}" for s in self.bootstrap.split(",") if s.strip()]
