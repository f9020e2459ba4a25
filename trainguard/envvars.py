"""Every environment variable trainguard reads, in one place.

Only entry points (``trainguard.cli`` and the command modules) read the environment;
library code receives validated configuration objects instead.
"""

from __future__ import annotations

__all__ = [
    "NUMPY_MADVISE_HUGEPAGE",
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX",
    "MALLOC_MMAP_THRESHOLD",
    "MALLOC_TOP_PAD",
    "MALLOC_TRIM_THRESHOLD",
    "AGENT_BACKEND",
    "AGENT_CONFIG",
    "INTERVAL_S",
    "NODE",
    "SIM_GPUS",
    "SPOOL_DIR",
    "SPOOL_MAX_MB",
    "STEPS_SOCKET",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
    "JOB_ID",
    "BOOTSTRAP",
    "CLICKHOUSE_PASSWORD",
    "CLUSTER",
    "KAFKA_CACHE",
    "KAFKA_DATA_DIR",
    "KAFKA_PORT",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_USERNAME",
    "KAFKA_PASSWORD",
    "KAFKA_PASSWORD_FILE",
    "KAFKA_CA_FILE",
    "KAFKA_CERT_FILE",
    "KAFKA_KEY_FILE",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "STORE_URL",
    "TEST_CLICKHOUSE_URL",
    "TOPIC_PREFIX",
    "APP_ID",
    "PARTITIONS",
    "REPLICATION_FACTOR",
    "BATCH_MAX",
    "BATCH_LINGER_S",
    "BATCH_WITHIN_S",
    "MAX_PARTITION_FETCH_BYTES",
    "STORE_MERGE_NICE",
    "MAX_FUTURE_S",
    "MAX_PAST_S",
    "MAX_WORLD_SIZE",
    "MAX_BASELINE_ENTITIES",
    "MAX_JOBS",
    "AGENT_SILENT_S",
    "WORKER_DATA_DIR",
    "WORKER_CONFIG",
    "FLEET_SECRET_FILE",
    "NODE_KEY_FILE",
    "GRAFANA_URL",
    "GRAFANA_TOKEN",
    "GRAFANA_RO_PASSWORD",
    "CLICKHOUSE_ADMIN_PASSWORD",
    "CLICKHOUSE_WORKER_PASSWORD",
    "CLICKHOUSE_OPERATOR_PASSWORD",
    "METRICS_PORT",
    "METRICS_ADDR",
    "AGENT_METRICS_PORT",
    "AGENT_METRICS_ADDR",
    "AGENT_METRICS_TEXTFILE_DIR",
    "TORCHRUN_RANK",
    "TORCHRUN_WORLD_SIZE",
    "TORCHRUN_LOCAL_RANK",
    "TORCHELASTIC_RUN_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURMD_NODENAME",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_MCA_ESS_BASE_JOBID",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
    "PMIX_NAMESPACE",
]

#: Kafka bootstrap servers, ``host:port[,host:port]``; empty means "start a local broker" (demo).
BOOTSTRAP = "TRAINGUARD_BOOTSTRAP_SERVERS"
#: Store URL: ``chdb:///path`` (embedded, default) or ``http(s)://user@host:8123/db``.
STORE_URL = "TRAINGUARD_STORE_URL"
#: Password for a ClickHouse server, kept out of URLs, logs and ``ps``.
CLICKHOUSE_PASSWORD = "TRAINGUARD_CLICKHOUSE_PASSWORD"
#: Prefix of every Kafka topic name (``tg`` gives ``tg.gpu-samples.v1``...).
TOPIC_PREFIX = "TRAINGUARD_TOPIC_PREFIX"
#: Cluster name stamped on records by agents.
CLUSTER = "TRAINGUARD_CLUSTER"
#: The agent's settings: config file, node name, GPU backend, sampling interval, spool,
#: trainers' step socket, simulated GPUs per node.
AGENT_CONFIG = "TRAINGUARD_AGENT_CONFIG"
NODE = "TRAINGUARD_NODE"
AGENT_BACKEND = "TRAINGUARD_AGENT_BACKEND"
INTERVAL_S = "TRAINGUARD_INTERVAL_S"
SPOOL_DIR = "TRAINGUARD_SPOOL_DIR"
SPOOL_MAX_MB = "TRAINGUARD_SPOOL_MAX_MB"
STEPS_SOCKET = "TRAINGUARD_STEPS_SOCKET"
#: Set by systemd for ``Type=notify`` units (sd_notify(3)): where the agent sends READY=1
#: and watchdog pings, the watchdog's period in microseconds, and the pid it is meant for.
NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
#: Set by systemd when a unit loads credentials (``LoadCredential=``): the directory they
#: are in. The worker looks relative receiver ``*_file`` secrets up there.
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
#: A training process's job id for ``StepReporter.from_env()``, over the launcher's.
JOB_ID = "TRAINGUARD_JOB_ID"
SIM_GPUS = "TRAINGUARD_SIM_GPUS"
#: How agents and workers authenticate to Kafka: security protocol (``PLAINTEXT``, ``SSL``,
#: ``SASL_SSL``), SASL mechanism and user, the password (this variable or a file: never
#: a flag), the CA that signed the brokers' certificates, a client certificate and key.
KAFKA_SECURITY_PROTOCOL = "TRAINGUARD_KAFKA_SECURITY_PROTOCOL"
KAFKA_SASL_MECHANISM = "TRAINGUARD_KAFKA_SASL_MECHANISM"
KAFKA_USERNAME = "TRAINGUARD_KAFKA_USERNAME"
KAFKA_PASSWORD = "TRAINGUARD_KAFKA_PASSWORD"
KAFKA_PASSWORD_FILE = "TRAINGUARD_KAFKA_PASSWORD_FILE"
KAFKA_CA_FILE = "TRAINGUARD_KAFKA_CA_FILE"
KAFKA_CERT_FILE = "TRAINGUARD_KAFKA_CERT_FILE"
KAFKA_KEY_FILE = "TRAINGUARD_KAFKA_KEY_FILE"
#: Where the Kafka broker jars fetched from Maven Central are cached.
KAFKA_CACHE = "TRAINGUARD_KAFKA_CACHE"
#: Data directory (config, pid file, logs, partitions) of the ``trainguard kafka`` local broker.
KAFKA_DATA_DIR = "TRAINGUARD_KAFKA_DATA_DIR"
#: Client port of that local broker; its controller listens on the next port.
KAFKA_PORT = "TRAINGUARD_KAFKA_PORT"
#: Logging level and format (``text`` or ``json``) for entry points.
LOG_LEVEL = "TRAINGUARD_LOG_LEVEL"
LOG_FORMAT = "TRAINGUARD_LOG_FORMAT"
#: A ClickHouse server for the server-backend tests; they skip when it is unset.
TEST_CLICKHOUSE_URL = "TRAINGUARD_TEST_CLICKHOUSE_URL"
#: The stream worker's settings: Faust app id (its consumer group), partitions and
#: replication factor of the topics it creates, store batching, data directory, and its
#: TOML file (alert lifecycle and receivers).
APP_ID = "TRAINGUARD_APP_ID"
PARTITIONS = "TRAINGUARD_PARTITIONS"
REPLICATION_FACTOR = "TRAINGUARD_REPLICATION_FACTOR"
BATCH_MAX = "TRAINGUARD_BATCH_MAX"
BATCH_WITHIN_S = "TRAINGUARD_BATCH_WITHIN_S"
BATCH_LINGER_S = "TRAINGUARD_BATCH_LINGER_S"
#: The most bytes one fetch of the worker's raw consumer reads of one partition.
MAX_PARTITION_FETCH_BYTES = "TRAINGUARD_MAX_PARTITION_FETCH_BYTES"
#: The ``nice`` of the embedded store's merge threads (0: as the worker's own).
STORE_MERGE_NICE = "TRAINGUARD_STORE_MERGE_NICE"
#: The worker's event-time window around a record's Kafka timestamp (seconds ahead, behind).
MAX_FUTURE_S = "TRAINGUARD_MAX_FUTURE_S"
MAX_PAST_S = "TRAINGUARD_MAX_PAST_S"
#: The worker's caps on what input can grow (see ``pipeline/caps.py``): the world size a
#: step record may claim, GPUs/ranks in the baselines, jobs in the consistency checks.
MAX_WORLD_SIZE = "TRAINGUARD_MAX_WORLD_SIZE"
MAX_BASELINE_ENTITIES = "TRAINGUARD_MAX_BASELINE_ENTITIES"
MAX_JOBS = "TRAINGUARD_MAX_JOBS"
#: Seconds without a heartbeat before a node running a job pages (``agent_silent``).
AGENT_SILENT_S = "TRAINGUARD_AGENT_SILENT_S"
WORKER_DATA_DIR = "TRAINGUARD_WORKER_DATA_DIR"
WORKER_CONFIG = "TRAINGUARD_WORKER_CONFIG"
#: Message authentication: the fleet secrets file (workers, ``trainguard keys``) and one
#: node's key file (its agent); both mode 0600, never on the command line.
FLEET_SECRET_FILE = "TRAINGUARD_FLEET_SECRET_FILE"
NODE_KEY_FILE = "TRAINGUARD_NODE_KEY_FILE"
#: ``trainguard grafana push``: Grafana's base URL and its service account token (a secret).
GRAFANA_URL = "TRAINGUARD_GRAFANA_URL"
GRAFANA_TOKEN = "TRAINGUARD_GRAFANA_TOKEN"
#: The default variable holding the read-only ClickHouse user's password for Grafana's data
#: source (``--ro-password-env`` names another).
GRAFANA_RO_PASSWORD = "CLICKHOUSE_RO_PASSWORD"
#: ``trainguard db grants``: the passwords of the server users it creates (the read-only
#: one's is :data:`GRAFANA_RO_PASSWORD`, as Grafana's data source reads it).
CLICKHOUSE_ADMIN_PASSWORD = "TRAINGUARD_CLICKHOUSE_ADMIN_PASSWORD"
CLICKHOUSE_WORKER_PASSWORD = "TRAINGUARD_CLICKHOUSE_WORKER_PASSWORD"
CLICKHOUSE_OPERATOR_PASSWORD = "TRAINGUARD_CLICKHOUSE_OPERATOR_PASSWORD"
#: Prometheus ``/metrics`` of the worker (port; unset: off) and of the agent (port, and
#: the node_exporter textfile-collector directory it writes ``trainguard_agent.prom`` to),
#: and the address each binds (default every interface, like node_exporter).
METRICS_PORT = "TRAINGUARD_METRICS_PORT"
METRICS_ADDR = "TRAINGUARD_METRICS_ADDR"
AGENT_METRICS_PORT = "TRAINGUARD_AGENT_METRICS_PORT"
AGENT_METRICS_ADDR = "TRAINGUARD_AGENT_METRICS_ADDR"
AGENT_METRICS_TEXTFILE_DIR = "TRAINGUARD_AGENT_METRICS_TEXTFILE_DIR"
#: numpy's own switch for advising huge pages (read at its import): the worker turns the
#: advice off unless this is set (``pipeline/worker.py``, ``_tune_memory``).
NUMPY_MADVISE_HUGEPAGE = "NUMPY_MADVISE_HUGEPAGE"
#: glibc's tunables (``glibc.malloc.*`` among them) and its older malloc variables: an
#: operator who sets one tunes malloc, and the worker then leaves glibc's thresholds as they
#: are (``pipeline/malloc_tuning.py``).
GLIBC_TUNABLES = "GLIBC_TUNABLES"
MALLOC_ARENA_MAX = "MALLOC_ARENA_MAX"
MALLOC_MMAP_MAX = "MALLOC_MMAP_MAX_"
MALLOC_MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"
MALLOC_TOP_PAD = "MALLOC_TOP_PAD_"
MALLOC_TRIM_THRESHOLD = "MALLOC_TRIM_THRESHOLD_"
#: Set by the launcher of a training job, never by trainguard: what
#: ``StepReporter.from_env()`` (:mod:`trainguard.agents.job_env`) reads to tell a training
#: process's job, rank, world size, local rank and node, for torchrun / torchelastic...
TORCHRUN_RANK = "RANK"
TORCHRUN_WORLD_SIZE = "WORLD_SIZE"
TORCHRUN_LOCAL_RANK = "LOCAL_RANK"
TORCHELASTIC_RUN_ID = "TORCHELASTIC_RUN_ID"
#: ... SLURM (``srun``; the job id is ``slurm-<SLURM_JOB_ID>.<SLURM_STEP_ID>``) ...
SLURM_PROCID = "SLURM_PROCID"
SLURM_NTASKS = "SLURM_NTASKS"
SLURM_LOCALID = "SLURM_LOCALID"
SLURM_JOB_ID = "SLURM_JOB_ID"
SLURM_STEP_ID = "SLURM_STEP_ID"
SLURMD_NODENAME = "SLURMD_NODENAME"
#: ... and MPI: Open MPI, else PMI (MPICH, Intel MPI, Cray); the job id from PMIx or
#: Open MPI (that one name is lower case, as Open MPI spells it).
OMPI_COMM_WORLD_RANK = "OMPI_COMM_WORLD_RANK"
OMPI_COMM_WORLD_SIZE = "OMPI_COMM_WORLD_SIZE"
OMPI_COMM_WORLD_LOCAL_RANK = "OMPI_COMM_WORLD_LOCAL_RANK"
OMPI_MCA_ESS_BASE_JOBID = "OMPI_MCA_ess_base_jobid"
PMI_RANK = "PMI_RANK"
PMI_SIZE = "PMI_SIZE"
MPI_LOCALRANKID = "MPI_LOCALRANKID"
PMIX_NAMESPACE = "PMIX_NAMESPACE"
#: Every launcher variable above, for tools that list or clear what a job inherits.
LAUNCHER_VARIABLES = (
    TORCHRUN_RANK, TORCHRUN_WORLD_SIZE, TORCHRUN_LOCAL_RANK, TORCHELASTIC_RUN_ID,
    SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_ID, SLURM_STEP_ID, SLURMD_NODENAME,
    OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK,
    OMPI_MCA_ESS_BASE_JOBID, PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, PMIX_NAMESPACE,
)
