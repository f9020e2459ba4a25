"""``trainguard worker``: run a stream worker (decode/validate → store)."""

from __future__ import annotations

import argparse
import os

from trainguard import envvars
from trainguard.cli._common import (
    add_bootstrap,
    add_env_option,
    add_kafka_security,
    add_store,
    add_topic_prefix,
    kafka_security,
    store_url,
)
from trainguard.metrics_http import DEFAULT_METRICS_ADDR

__all__ = ["register", "worker_config"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` command."""
    p = subparsers.add_parser("worker", help="run a stream worker (Faust): Kafka → checks → store")
    add_bootstrap(p, default="127.0.0.1:9092")
    add_kafka_security(p)
    add_store(p)
    add_topic_prefix(p)
    add_env_option(
        p,
        "--app-id",
        envvars.APP_ID,
        "trainguard-worker",
        "Faust app id, also the consumer group shared by workers",
    )
    add_env_option(
        p, "--partitions", envvars.PARTITIONS, 3, "partitions of topics it creates", type=int
    )
    add_env_option(
        p,
        "--replication-factor",
        envvars.REPLICATION_FACTOR,
        None,
        "replication factor of topics it creates; unset: the brokers' "
        "default.replication.factor if set, else min(3, brokers)",
        type=int,
    )
    add_env_option(
        p, "--batch-max", envvars.BATCH_MAX, 16000, "messages per batch at most", type=int
    )
    add_env_option(
        p,
        "--batch-within",
        envvars.BATCH_WITHIN_S,
        0.2,
        "seconds a partial batch waits before it is written",
        type=float,
    )
    add_env_option(
        p, "--batch-linger", envvars.BATCH_LINGER_S, 0.2,
        "seconds a batch keeps collecting after its first messages (0: off)", type=float)
    add_env_option(
        p, "--max-partition-fetch-bytes", envvars.MAX_PARTITION_FETCH_BYTES, 8 * 1024 * 1024,
        "bytes one fetch of the raw topics reads of one partition at most", type=int)
    add_env_option(
        p, "--store-merge-nice", envvars.STORE_MERGE_NICE, 19,
        "nice value (0-19) of the embedded store's merge threads, so that merges take idle "
        "CPU and yield to the worker's own threads (0: as the worker's)", type=int)
    add_env_option(
        p, "--max-future-s", envvars.MAX_FUTURE_S, 600.0,
        "seconds a record's ts may run ahead of its Kafka timestamp (else a 'clock' dead "
        "letter); raise it to replay simulated time", type=float)
    add_env_option(
        p, "--max-past-s", envvars.MAX_PAST_S, 7 * 86400.0,
        "seconds a record's ts may lag its Kafka timestamp (else a 'clock' dead letter)",
        type=float)
    add_env_option(
        p, "--max-world-size", envvars.MAX_WORLD_SIZE, 1 << 20,
        "largest world size a step record may claim (else a 'cap_world_size' dead letter)",
        type=int)
    add_env_option(
        p, "--max-baseline-entities", envvars.MAX_BASELINE_ENTITIES, 131_072,
        "GPUs (and as many ranks) whose baselines are kept; past it the least recently "
        "seen is evicted (counted)", type=int)
    add_env_option(
        p, "--max-jobs", envvars.MAX_JOBS, 4096,
        "jobs the consistency checks track at once; past it the least recently seen is "
        "evicted (counted)", type=int)
    add_env_option(
        p, "--agent-silent-s", envvars.AGENT_SILENT_S, 8.0,
        "seconds without a heartbeat before a node running a job pages (agent_silent); "
        "above the agents' heartbeat interval (5 s)", type=float)
    add_env_option(
        p,
        "--data-dir",
        envvars.WORKER_DATA_DIR,
        "./trainguard-data/worker",
        "directory for the worker's local state",
    )
    p.add_argument("--no-detect", dest="detect", action="store_false",
                   help="only decode and store; skip the baseline detectors")
    p.add_argument("--no-consistency", dest="consistency", action="store_false",
                   help="skip the cross-rank consistency checks")
    add_env_option(p, "--config", envvars.WORKER_CONFIG, None,
                   "TOML file with the alert lifecycle and receivers "
                   "(example: infra/worker/worker.toml); none: alerts are only recorded")
    p.add_argument("--no-alerts", dest="alerts", action="store_false",
                   help="record findings only; run no alert stream jobs")
    add_env_option(p, "--fleet-secret-file", envvars.FLEET_SECRET_FILE, None,
                   "fleet secrets file (`trainguard keys init`, mode 0600): every input "
                   "message's MAC is verified; unauthenticated input is refused")
    p.add_argument("--no-require-auth", dest="require_auth", action="store_const", const=False,
                   default=None, help="with a fleet secret file, only count messages that do "
                   "not verify instead of refusing them (while agents are being enrolled)")
    add_env_option(p, "--metrics-port", envvars.METRICS_PORT, None,
                   "serve Prometheus metrics on this port at /metrics (9464 is the usual "
                   "choice); unset: off", type=int)
    add_env_option(p, "--metrics-addr", envvars.METRICS_ADDR, DEFAULT_METRICS_ADDR,
                   "address /metrics binds (127.0.0.1: local scrapers only)")
    p.add_argument("--check-config", action="store_true",
                   help="build the configuration as the worker would (flags, environment, "
                        "--config TOML; fleet secret file read), print it as JSON with "
                        "secrets redacted, and exit: 0 if valid, 2 if not; connects to "
                        "nothing")
    p.set_defaults(func=_run)


def worker_config(args: argparse.Namespace) -> object:
    """Build the validated :class:`~trainguard.pipeline.config.WorkerConfig` from parsed flags."""
    from dataclasses import replace

    from trainguard.pipeline.config import AlertingConfig, WorkerConfig
    from trainguard.pipeline.config_loader import load_alerting
    from trainguard.schemas.topics import Topics

    alerting = (load_alerting(args.config, environ=os.environ) if args.config
                else AlertingConfig())
    if not args.alerts:
        alerting = replace(alerting, enabled=False)
    return WorkerConfig(
        bootstrap=args.bootstrap,
        security=kafka_security(args),
        store=store_url(args.store),
        topics=Topics(args.topic_prefix),
        app_id=args.app_id,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        batch_max=args.batch_max,
        batch_within_s=args.batch_within,
        batch_linger_s=args.batch_linger,
        max_partition_fetch_bytes=args.max_partition_fetch_bytes,
        store_merge_nice=args.store_merge_nice,
        data_dir=args.data_dir,
        max_future_s=args.max_future_s,
        max_past_s=args.max_past_s,
        max_world_size=args.max_world_size,
        max_baseline_entities=args.max_baseline_entities,
        max_jobs=args.max_jobs,
        agent_silent_s=args.agent_silent_s,
        detect=args.detect,
        consistency=args.consistency,
        alerting=alerting,
        fleet_secret_file=args.fleet_secret_file,
        require_auth=args.require_auth,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
    )


def _run(args: argparse.Namespace) -> int:
    from trainguard.pipeline.config import WorkerConfig
    from trainguard.pipeline.worker import run_worker

    config = worker_config(args)
    assert isinstance(config, WorkerConfig)
    if args.check_config:
        from trainguard.cli.check_config import print_config
        from trainguard.pipeline.worker import message_auth

        message_auth(config)  # as run_worker does first: a bad secret file stops the start
        return print_config(config)
    from trainguard.sd_notify import SdNotifier

    return run_worker(config, loglevel=args.log_level.lower(),
                      notifier=SdNotifier.from_environ(os.environ))
