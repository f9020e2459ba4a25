"""Wiring of the node agent daemon: collector, step intake, spool, sender, signals.

``trainguard agent`` calls :func:`run_agent` with a validated config. SIGTERM/SIGINT
set a stop event: the loop finishes its tick, sends a last heartbeat, stops taking
steps, gives the sender a few seconds to drain the spool (what remains stays on disk
for the next start) and releases NVML.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from trainguard.agents.collectors.base import GpuCollector
from trainguard.agents.collectors.process import ProcessStats
from trainguard.agents.config import AgentConfig
from trainguard.agents.daemon import ClaimPoll, NodeAgent, RankPoll, StepPoll, WitnessPoll
from trainguard.agents.dead_letter_file import LocalDeadLetters
from trainguard.agents.metrics import start_metrics
from trainguard.agents.reporter import CheckpointReport
from trainguard.agents.sender import SpoolSender
from trainguard.agents.spool import Spool
from trainguard.agents.transport import SpoolTransport
from trainguard.errors import ConfigError
from trainguard.schemas.auth import NodeKey
from trainguard.schemas.keyfiles import read_node_key
from trainguard.sd_notify import SdNotifier

__all__ = ["load_node_key", "make_collector", "run_agent"]

log = logging.getLogger(__name__)


def make_collector(config: AgentConfig) -> GpuCollector:
    """The configured GPU backend; NVML fails fast with one clear line when there is no driver."""
    if config.backend == "nvml":
        from trainguard.agents.collectors.nvml import NvmlGpus

        return NvmlGpus()
    from trainguard.agents.collectors.simulated import SimulatedGpus

    return SimulatedGpus(config.node, config.sim_gpus)


def load_node_key(config: AgentConfig) -> NodeKey | None:
    """The node's key from ``config.node_key_file`` (checked: private, this node's), if set."""
    if config.node_key_file is None:
        log.warning("no node key file: messages go unsigned node=%s (workers that require "
                    "authentication refuse them; `trainguard keys enrol`)", config.node)
        return None
    key = read_node_key(config.node_key_file)
    if key.node != config.node:
        raise ConfigError(f"node key file {config.node_key_file} is for node {key.node!r}, "
                          f"but this agent is node {config.node!r}; enrol this node "
                          f"(`trainguard keys enrol --node {config.node}`) or set --node")
    log.info("messages are signed node=%s kid=%s", key.node, key.kid)
    return key


def run_agent(
    config: AgentConfig,
    stop: threading.Event,
    *,
    collector: GpuCollector | None = None,
    max_ticks: int | None = None,
    drain_timeout: float = 10.0,
    on_ready: Callable[[NodeAgent], None] | None = None,
    notifier: SdNotifier | None = None,
) -> NodeAgent:
    """Run the agent until ``stop`` is set (or ``max_ticks``); return it for its counters.

    Under a ``Type=notify`` unit, ``notifier`` tells systemd when the agent is up
    (``READY=1``), pings its watchdog from the tick loop, and says ``STOPPING=1``.
    """
    from trainguard.agents.collectors.steps_file import StepFileTail
    from trainguard.agents.collectors.witness import Witness
    from trainguard.agents.intake import StepIntake
    from trainguard.agents.rank_watch import RankWatch

    node_key = load_node_key(config)  # before anything is opened: a bad key stops here
    metrics = start_metrics(config)  # a textfile directory or port that fails stops here
    collector = collector or make_collector(config)
    spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes,
                  memory_max_bytes=config.spool_memory_max_bytes)
    dead_letters = LocalDeadLetters(config.spool_dir / "dead-letters.jsonl",
                                    max_bytes=config.dead_letter_max_bytes)
    sender = SpoolSender(spool, config.kafka, dead_letters=dead_letters, node_key=node_key)
    transport = SpoolTransport(spool, sender)
    intake = None
    sources: list[StepPoll] = []
    checkpoint_sources: list[Callable[[], list[CheckpointReport]]] = []
    claim_sources: list[ClaimPoll] = []
    rank_sources: list[RankPoll] = []
    watch = None
    tails = []
    witness = None
    witness_sources: list[WitnessPoll] = []
    try:
        if config.steps_socket is not None:
            # 20 ms between socket sweeps: ~0.1% of a core idle; 8 ranks x 10 Hz still leave the
            # kernel queue (net.unix.max_dgram_qlen) far from full between sweeps.
            intake = StepIntake(config.steps_socket, mode=config.steps_socket_mode,
                                group=config.steps_socket_group, poll_interval_s=0.02,
                                max_reporters=config.intake_max_reporters,
                                max_reported_drops=config.intake_max_reported_drops)
            intake.start()
            sources.append(intake.drain)
            checkpoint_sources.append(intake.drain_checkpoints)
            claim_sources.append(intake.drain_claims)
            rank_sources.append(intake.rank_reports.drain)
            if config.rank_watch_interval_s > 0:
                watch = RankWatch(intake.bindings, intake.rank_reports.add_event,
                                  interval_s=config.rank_watch_interval_s)
                watch.start()
        for path in config.steps_files:
            tail = StepFileTail(path, node=config.node)
            tails.append(tail)
            sources.append(tail.poll)
        if config.witness.enabled:
            witness = Witness(config.witness, cluster=config.cluster, node=config.node)
            witness.start()
            witness_sources.append(witness.poll)
        sender.start()
        stats = ProcessStats()

        def gauges() -> dict[str, Any]:
            p50, worst = sender.take_latencies()
            step_counters = [c for c in (intake, *tails) if c is not None]
            claims = intake.counts() if intake is not None else {}
            ranks = intake.rank_reports.counts() if intake is not None else {}
            return {
                "steps_received": sum(getattr(c, "steps_received", 0) for c in step_counters),
                "steps_malformed": sum(getattr(c, "steps_malformed", 0) for c in step_counters),
                "steps_dropped": sum(getattr(c, "steps_dropped", 0) for c in step_counters),
                "datagrams_dropped": getattr(intake, "datagrams_dropped", 0),
                "send_errors": sender.errors,
                "spool_depth": spool.depth,
                "spool_bytes": spool.size_bytes,
                "spool_dropped": spool.dropped,
                "spool_write_errors": spool.write_errors,
                "spool_memory_depth": spool.memory_depth,
                "dead_lettered": dead_letters.count,
                "reporters_evicted": claims.get("reporters_evicted", 0),
                "claims_refused": claims.get("claims_refused", 0),
                "claim_conflicts": claims.get("claim_conflicts", 0),
                "rank_events": ranks.get("events_received", 0),
                "rank_events_dropped": ranks.get("events_dropped", 0),
                "manifests_dropped": ranks.get("manifests_dropped", 0),
                "witness_hashed": witness.hashed if witness is not None else 0,
                "witness_skipped": witness.skipped if witness is not None else 0,
                "send_latency_ms_p50": p50,
                "send_latency_ms_max": worst,
                "cpu_pct": stats.cpu_pct(),
                "rss_bytes": stats.rss_bytes(),
            }

        agent = NodeAgent(config, collector, transport, step_sources=sources,
                          checkpoint_sources=checkpoint_sources,
                          witness_sources=witness_sources, claim_sources=claim_sources,
                          rank_sources=rank_sources,
                          gauges=gauges, dead_letters=dead_letters, notifier=notifier,
                          on_heartbeat=metrics.on_heartbeat if metrics is not None else None)
        log.info(
            "agent started node=%s backend=%s gpus=%d interval_s=%s spool=%s spooled=%d "
            "steps_socket=%s",
            config.node, config.backend, collector.gpu_count, config.interval_s,
            config.spool_dir, spool.depth, config.steps_socket,
        )
        if on_ready is not None:
            on_ready(agent)
        if notifier is not None:
            notifier.ready(f"node={config.node} gpus={collector.gpu_count}")
        agent.run(stop, max_ticks=max_ticks)
        if notifier is not None:
            notifier.stopping()
        agent.heartbeat(time.time())  # the last word: final counters
        return agent
    finally:
        if metrics is not None:
            metrics.close()
        if watch is not None:
            watch.stop()
            log.info("rank watch stopped node=%s events=%s hidden=%d errors=%d",
                     config.node, watch.events, watch.hidden, watch.errors)
        if intake is not None:
            log.info("rank reports node=%s %s", config.node,
                     " ".join(f"{k}={v}" for k, v in intake.rank_reports.counts().items()))
            intake.stop()
        if witness is not None:
            witness.stop()
        transport.close(timeout=drain_timeout)
        collector.close()
        log.info("agent stopped node=%s spooled=%d", config.node, spool.depth)
