"""Flattening of wire records into table rows (one dict per row, columns as in schemas/sql).

Kept free of Faust and of the store so that it can be unit-tested and benchmarked on
its own. ``None`` maps to SQL NULL (or the empty string for LowCardinality text).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from trainguard.schemas.records import (
    Anomaly,
    CheckpointEvent,
    Finding,
    GpuSampleBatch,
    Heartbeat,
    Record,
    StepBatch,
    StepRecord,
    WitnessReport,
)

__all__ = ["Row", "rows_for"]

Row = dict[str, Any]

_json = msgspec.json.Encoder()


def rows_for(record: Record, partition: int = -1, offset: int = -1) -> Iterator[tuple[str, Row]]:
    """Yield ``(table, row)`` pairs for one decoded record."""
    if isinstance(record, GpuSampleBatch):
        yield "sample_batches", _batch_row(record, partition, offset)
        for gpu in record.gpus:
            yield (
                "gpu_samples",
                {
                    "cluster": record.cluster,
                    "node": record.node,
                    "job_id": record.job_id or "",
                    "gpu": gpu.index,
                    "ts": record.ts,
                    "uuid": gpu.uuid or "",
                    "model": gpu.model or "",
                    "lost": gpu.lost,
                    "util_gpu_pct": gpu.util_gpu_pct,
                    "util_mem_pct": gpu.util_mem_pct,
                    "mem_used_bytes": gpu.mem_used_bytes,
                    "mem_total_bytes": gpu.mem_total_bytes,
                    "power_w": gpu.power_w,
                    "power_limit_w": gpu.power_limit_w,
                    "temp_c": gpu.temp_c,
                    "sm_clock_mhz": gpu.sm_clock_mhz,
                    "mem_clock_mhz": gpu.mem_clock_mhz,
                    "clock_event_reasons": gpu.clock_event_reasons,
                    "pcie_rx_bytes_s": gpu.pcie_rx_bytes_s,
                    "pcie_tx_bytes_s": gpu.pcie_tx_bytes_s,
                    "nvlink_rx_bytes": gpu.nvlink_rx_bytes,
                    "nvlink_tx_bytes": gpu.nvlink_tx_bytes,
                    "ecc_corrected": gpu.ecc_corrected,
                    "ecc_uncorrected": gpu.ecc_uncorrected,
                    "remapped_rows_correctable": gpu.remapped_rows_correctable,
                    "remapped_rows_uncorrectable": gpu.remapped_rows_uncorrectable,
                    "remap_pending": gpu.remap_pending,
                    "remap_failed": gpu.remap_failed,
                    "xids": [e.xid for e in gpu.xid_events],
                    "compute_procs": gpu.compute_procs,
                    "proc_pids": [p.pid for p in gpu.processes],
                    "proc_mem_bytes": [p.used_mem_bytes or 0 for p in gpu.processes],
                    "read_errors": gpu.errors,
                },
            )
    elif isinstance(record, StepBatch):
        for step in record.steps:
            yield "steps", _step_row(step, record.cluster)
        for event in record.events:
            yield "rank_events", {
                "cluster": record.cluster,
                "node": record.node,
                "job_id": record.job_id,
                "rank": event.rank,
                "ts": event.ts,
                "event": event.event,
                "pid": event.pid,
                "exit_code": event.exit_code,
                "signal": event.signal,
                "reason": event.reason or "",
                "step": event.step,
                "since": event.since,
                "collective": event.collective,
            }
    elif isinstance(record, StepRecord):
        yield "steps", _step_row(record, "")
    elif isinstance(record, Heartbeat):
        row: Row = {
            "cluster": record.cluster,
            "node": record.node,
            "ts": record.ts,
            "agent_id": record.agent_id,
            "agent_version": record.agent_version,
            "backend": record.backend,
            "uptime_s": record.uptime_s,
            "gpu_count": record.gpu_count,
        }
        row.update(msgspec.structs.asdict(record.counters))
        yield "agent_heartbeats", row
    elif isinstance(record, CheckpointEvent):
        yield "checkpoints", {
            "cluster": record.cluster,
            "job_id": record.job_id,
            "checkpoint_id": record.checkpoint_id,
            "rank": record.rank,
            "action": record.action,
            "node": record.node,
            "step": record.step,
            "ts": record.ts,
            "digest": record.digest,
            "path": record.path or "",
        }
    elif isinstance(record, WitnessReport):
        yield "witness", {
            "cluster": record.cluster,
            "node": record.node,
            "job_id": record.job_id or "",
            "ts": record.ts,
            "subject": record.subject,
            "path": record.path,
            "digest": record.digest or "",
            "size": record.size,
            "changed_at": record.changed_at,
            "files": record.files,
            "changed_files": record.changed_files,
            "changed_count": record.changed_count,
            "skipped": record.skipped or "",
        }
    elif isinstance(record, Finding):
        yield "findings", {
            "cluster": record.cluster,
            "job_id": record.job_id or "",
            "check": record.check,
            "category": record.category,
            "finding_id": record.finding_id,
            "first_seen": record.first_seen,
            "ts": record.ts,
            "last_seen": record.last_seen if record.last_seen is not None else record.ts,
            "cleared_at": record.cleared_at,
            "step": record.step,
            "ranks": record.ranks,
            "nodes": record.nodes,
            "gpu": record.gpu_index,
            "observed": "" if record.observed is None else str(record.observed),
            "expected": "" if record.expected is None else str(record.expected),
            "score": record.score,
            "summary": record.summary,
            "evidence": _json.encode(record.evidence).decode(),
            "check_version": record.check_version,
        }
    elif isinstance(record, Anomaly):
        yield "anomalies", {
            "cluster": record.cluster,
            "entity_kind": record.entity_kind,
            "entity": record.entity,
            "node": record.node or "",
            "gpu": record.gpu_index,
            "job_id": record.job_id or "",
            "rank": record.rank,
            "metric": record.metric,
            "pattern": record.pattern,
            "first_seen": record.first_seen,
            "ts": record.ts,
            "value": record.value,
            "baseline": record.baseline,
            "scale": record.scale,
            "score": record.score,
            "window": record.window,
            "detector": record.detector,
            "detector_version": record.detector_version,
        }
    else:
        yield (
            "alerts",
            {
                "cluster": record.cluster,
                "alert_id": record.alert_id,
                "fingerprint": record.fingerprint,
                "status": record.status,
                "severity": record.severity,
                "check": record.check,
                "summary": record.summary,
                "ts": record.ts,
                "starts_at": record.starts_at,
                "ends_at": record.ends_at,
                "job_id": record.job_id or "",
                "node": record.node or "",
                "rank": record.rank,
                "gpu": record.gpu_index,
                "evidence": _json.encode(record.evidence).decode(),
                "labels": record.labels,
                "runbook_url": record.runbook_url or "",
                "dashboard_url": record.dashboard_url or "",
            },
        )


def _batch_row(b: GpuSampleBatch, partition: int, offset: int) -> Row:
    return {
        "cluster": b.cluster,
        "node": b.node,
        "job_id": b.job_id or "",
        "ts": b.ts,
        "seq": b.seq,
        "agent_id": b.agent_id,
        "gpu_count": len(b.gpus),
        "lost_gpus": sum(1 for g in b.gpus if g.lost),
        "driver_version": b.driver_version or "",
        "schema_version": b.schema_version,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def _step_row(s: StepRecord, cluster: str) -> Row:
    return {
        "cluster": cluster,
        "job_id": s.job_id,
        "step": s.step,
        "rank": s.rank,
        "world_size": s.world_size,
        "node": s.node,
        "local_rank": s.local_rank,
        "gpu": s.gpu_index,
        "ts": s.ts,
        "loss": s.loss,
        "grad_norm": s.grad_norm,
        "lr": s.lr,
        "step_time_s": s.step_time_s,
        "samples_per_s": s.samples_per_s,
        "tokens_per_s": s.tokens_per_s,
        "loss_scale": s.loss_scale,
        "param_checksum": s.param_checksum or "",
        "env_fingerprint": s.env_fingerprint or "",
        "nonfinite": s.nonfinite,
        "dp_rank": s.dp_rank,
        "tp_rank": s.tp_rank,
        "pp_rank": s.pp_rank,
        "local_grad_norm": s.local_grad_norm,
        "compute_time_s": s.compute_time_s,
        "seed_fingerprint": s.seed_fingerprint or "",
        "shard": s.shard,
        "ep_rank": s.ep_rank,
        "data_epoch": s.data_epoch,
        "checksum_step": s.checksum_step,
    }
