"""Running one stream worker: fail fast on Kafka and the store, then hand over to Faust.

In embedded mode (chdb) this worker is the one process that owns the store directory;
it serves read-only queries on a loopback endpoint so that ``trainguard db counts``,
``db query`` and the demo's progress line work while it runs.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path

from trainguard import envvars
from trainguard.metrics_http import MetricsServer, serve_metrics
from trainguard.pipeline.auth import ForgeryTracker, MessageAuth
from trainguard.pipeline.caps import IngestCaps
from trainguard.pipeline.config import WorkerConfig
from trainguard.pipeline.detect.quiet import warm_up as warm_up_detectors
from trainguard.pipeline.fetch_codec import install as install_codecs
from trainguard.pipeline.ingest import Ingestor, TimeWindow
from trainguard.pipeline.kafka_admin import (
    broker_replication_factor,
    ensure_pipeline_topics,
    wait_for_broker,
)
from trainguard.pipeline.malloc_tuning import pin_malloc_thresholds
from trainguard.pipeline.sinks.columns import warm_up as warm_up_columns
from trainguard.pipeline.sinks.store_sink import StoreSink
from trainguard.pipeline.store import migrate, open_store, serve_reads
from trainguard.schemas.keyfiles import read_fleet_secrets
from trainguard.sd_notify import SdNotifier

__all__ = ["message_auth", "run_worker"]

log = logging.getLogger(__name__)


def run_worker(config: WorkerConfig, *, loglevel: str = "info",
               notifier: SdNotifier | None = None) -> int:
    """Run a worker until SIGTERM/SIGINT; return the process exit code.

    ``notifier``: systemd's ``Type=notify`` socket (``READY=1``, watchdog pings from the
    event loop, ``STOPPING=1`` on the way out); a no-op one outside systemd.
    """
    from faust.worker import Worker  # heavy import, only for the process that runs it

    from trainguard.pipeline.app import build_app

    auth = message_auth(config)  # a bad key file stops the start before anything else
    wait_for_broker(config.bootstrap, timeout=30, security=config.security)
    # Resolved once, here: the topics created now and Faust's own topics get the same.
    replication = config.replication_factor or broker_replication_factor(
        config.bootstrap, security=config.security)
    config = replace(config, replication_factor=replication)
    ensure_pipeline_topics(config.bootstrap, config.topics, partitions=config.partitions,
                           replication_factor=replication,
                           security=config.security)
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    store = open_store(config.store)
    reads = None
    sink: StoreSink | None = None
    served: MetricsServer | None = None
    try:
        applied = migrate(store)
        if applied:
            log.info("store migrated applied=%s", ",".join(applied))
        if config.store.path is not None:  # embedded: this process owns the directory
            reads = serve_reads(store, config.store.path)
        ingestor = Ingestor(
            config.topics, IngestCaps(max_world_size=config.max_world_size),
            window=TimeWindow(max_future_s=config.max_future_s, max_past_s=config.max_past_s),
            auth=auth)
        sink = StoreSink(store, retry_for_s=config.store_retry_s)
        from trainguard.pipeline.baselines import BaselineConfig, BaselineStage
        from trainguard.pipeline.consistency import ConsistencyConfig, ConsistencyStage

        stage = BaselineStage(BaselineConfig(max_entities=config.max_baseline_entities)) \
            if config.detect else None
        checks = ConsistencyStage(ConsistencyConfig(
            max_jobs=config.max_jobs, max_world_size=config.max_world_size,
            agent_silent_s=config.agent_silent_s)) \
            if config.consistency else None
        metrics = None
        if config.metrics_port is not None:
            from trainguard.pipeline.metrics import WorkerMetrics

            metrics = WorkerMetrics(f"{socket.gethostname()}:{os.getpid()}")
            served = serve_metrics(metrics.registry, config.metrics_port, config.metrics_addr)
        app = build_app(config, ingestor, sink, stage, checks, store, metrics=metrics,
                        notifier=notifier)
        log.info(
            "worker starting app_id=%s bootstrap=%s kafka_security=%s store=%s topics=%s",
            config.app_id,
            config.bootstrap,
            config.security.describe(),
            config.store,
            ",".join(config.topics.inputs()),
        )
        worker = Worker(app, loglevel=loglevel, override_logging=False, quiet=True)
        warm_up_detectors()  # numba compiles (or loads its cache) before the first batch
        warm_up_columns()  # and the store's msgpack kernel before the first write
        if not install_codecs():  # zstd: a context per thread, not per batch; lz4: python-lz4
            log.warning("zstd fetches decode with aiokafka's own decoder (slower)")
        _tune_gc()
        _tune_memory()
        pin_malloc_thresholds()  # per-batch arrays reuse the heap instead of faulting anew
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
            return code
        return 0
    finally:
        if notifier is not None:
            notifier.stopping()
        if served is not None:
            served.close()
        if sink is not None:
            sink.close()  # a write still waiting for a down store gives up: replayed later
        if reads is not None:
            reads.close()
        store.close()


def message_auth(config: WorkerConfig) -> MessageAuth | None:
    """The input's MAC check, when a fleet secret file is configured (read it now: fail fast)."""
    if config.fleet_secret_file is None:
        return None
    secrets = read_fleet_secrets(Path(config.fleet_secret_file))
    log.info("input authentication required=%s kids=%s", config.auth_required,
             ",".join(s.kid for s in secrets))
    return MessageAuth(secrets, required=config.auth_required,
                       tracker=ForgeryTracker(repeat_s=config.forged_repeat_s))


def _tune_gc() -> None:
    """Keep CPython's cyclic GC from rescanning the long-lived heap on every few batches.

    Each batch makes hundreds of thousands of short-lived objects (decoded records); with
    the default thresholds the collector keeps walking everything start-up built (Faust,
    numpy, chdb). Freezing that heap and collecting the young generation less often
    measured 2.6x faster decoding (BENCHMARKS.md); the records hold no reference cycles.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _tune_memory() -> bool:
    """Stop numpy advising huge pages for its arrays, unless ``NUMPY_MADVISE_HUGEPAGE`` is set.

    The detector banks grow to GBs of arrays as a fleet registers. With the huge-page advice
    (numpy's default on Linux) and the kernel's usual ``defrag=madvise``, a fault may compact
    memory first: allocating 80 MB took 0.6 s here at times, 30 ms without the advice, and
    capacity at 10,000 nodes (all registration) went from ~9,000 to ~12,700 messages/s with
    no change in the steady state (BENCHMARKS.md, round 9). numpy reads the variable only
    at import, so the worker sets what numpy's own start-up would have set from it.
    Returns whether the advice is off now.
    """
    chosen = os.environ.get(envvars.NUMPY_MADVISE_HUGEPAGE)
    if chosen is not None:
        return chosen == "0"  # the operator chose; numpy applied it at import
    import importlib

    import numpy as np

    major = int(np.__version__.split(".")[0])
    core = importlib.import_module("numpy._core.multiarray" if major >= 2
                                   else "numpy.core.multiarray")
    setter = getattr(core, "_set_madvise_hugepage", None)
    if setter is None:  # a numpy without the switch: it keeps its default
        log.warning("numpy huge-page advice left on: no _set_madvise_hugepage in numpy %s",
                    np.__version__)
        return False
    setter(False)
    return True

