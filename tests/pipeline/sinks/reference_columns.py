"""The Python-object column builder as of main 23304dc, kept as the reference.

:mod:`trainguard.pipeline.sinks.columns` now reads the records' JSON with Arrow's C++
reader; the tests pin its tables to these, built the old way (``msgspec.structs.astuple``
per GPU or rank, a ``zip`` transpose, ``pyarrow.array`` per column), value for value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from trainguard.pipeline.store.errors import StoreDataError
from trainguard.schemas.records import GpuSample, GpuSampleBatch, StepBatch, StepRecord

__all__ = ["sample_tables", "step_tables"]

#: One intake record with the Kafka partition and offset of its message.
IntakeItem = tuple[Any, int, int]

_astuple = msgspec.structs.astuple
_STR, _BOOL, _F32, _F64 = pa.string(), pa.bool_(), pa.float32(), pa.float64()
_U8, _U16, _U32, _U64, _I32, _I64 = (pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
                                     pa.int32(), pa.int64())

#: gpu_samples columns read straight off a GpuSample field: (column, field, type).
_GPU_PLAIN: list[tuple[str, str, pa.DataType]] = [
    ("gpu", "index", _U8), ("lost", "lost", _BOOL),
    ("util_gpu_pct", "util_gpu_pct", _F32), ("util_mem_pct", "util_mem_pct", _F32),
    ("mem_used_bytes", "mem_used_bytes", _U64), ("mem_total_bytes", "mem_total_bytes", _U64),
    ("power_w", "power_w", _F32), ("power_limit_w", "power_limit_w", _F32),
    ("temp_c", "temp_c", _F32), ("sm_clock_mhz", "sm_clock_mhz", _U32),
    ("mem_clock_mhz", "mem_clock_mhz", _U32),
    ("clock_event_reasons", "clock_event_reasons", _U64),
    ("pcie_rx_bytes_s", "pcie_rx_bytes_s", _F64), ("pcie_tx_bytes_s", "pcie_tx_bytes_s", _F64),
    ("nvlink_rx_bytes", "nvlink_rx_bytes", _U64), ("nvlink_tx_bytes", "nvlink_tx_bytes", _U64),
    ("ecc_corrected", "ecc_corrected", _U64), ("ecc_uncorrected", "ecc_uncorrected", _U64),
    ("remapped_rows_correctable", "remapped_rows_correctable", _U32),
    ("remapped_rows_uncorrectable", "remapped_rows_uncorrectable", _U32),
    ("remap_pending", "remap_pending", _BOOL), ("remap_failed", "remap_failed", _BOOL),
    ("compute_procs", "compute_procs", _U16),
]
#: steps columns read straight off a StepRecord field (text ones: None becomes '').
_STEP_PLAIN: list[tuple[str, str, pa.DataType]] = [
    ("job_id", "job_id", _STR), ("step", "step", _U64), ("rank", "rank", _U32),
    ("world_size", "world_size", _U32), ("node", "node", _STR),
    ("local_rank", "local_rank", _U16), ("gpu", "gpu_index", _U8), ("ts", "ts", _F64),
    ("loss", "loss", _F64), ("grad_norm", "grad_norm", _F64), ("lr", "lr", _F64),
    ("step_time_s", "step_time_s", _F32), ("samples_per_s", "samples_per_s", _F32),
    ("tokens_per_s", "tokens_per_s", _F32), ("loss_scale", "loss_scale", _F32),
    ("param_checksum", "param_checksum", _STR), ("env_fingerprint", "env_fingerprint", _STR),
    ("dp_rank", "dp_rank", _U32), ("tp_rank", "tp_rank", _U32), ("pp_rank", "pp_rank", _U32),
    ("local_grad_norm", "local_grad_norm", _F64), ("compute_time_s", "compute_time_s", _F32),
    ("seed_fingerprint", "seed_fingerprint", _STR), ("shard", "shard", _U32),
    ("ep_rank", "ep_rank", _U32), ("data_epoch", "data_epoch", _U64),
    ("checksum_step", "checksum_step", _U64),
]
_GPU_AT = {name: i for i, name in enumerate(GpuSample.__struct_fields__)}
_STEP_AT = {name: i for i, name in enumerate(StepRecord.__struct_fields__)}
_NOT_NULL_TEXT = frozenset({"uuid", "model", "param_checksum", "env_fingerprint",
                            "seed_fingerprint"})


def sample_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    """``sample_batches`` and ``gpu_samples`` of sample batches, as Arrow tables."""
    try:
        return _sample_tables(items)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise StoreDataError(f"sample batch does not fit its columns: {exc}") from None


def step_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    """``steps`` (and ``rank_events`` when any) of step batches, as Arrow tables."""
    try:
        return _step_tables(items)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise StoreDataError(f"step batch does not fit its columns: {exc}") from None


def _sample_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    batches: list[GpuSampleBatch] = [item[0] for item in items]
    counts = np.fromiter((len(b.gpus) for b in batches), np.int64, len(batches))
    at = np.repeat(np.arange(len(batches)), counts)  # each GPU's batch
    owner = pa.array(at)
    fields = _transpose([_astuple(g) for b in batches for g in b.gpus], len(_GPU_AT))
    lost = np.fromiter(fields[_GPU_AT["lost"]], bool, len(fields[_GPU_AT["lost"]]))
    cluster = pa.array([b.cluster for b in batches], _STR)
    node = pa.array([b.node for b in batches], _STR)
    job = pa.array([b.job_id or "" for b in batches], _STR)
    ts = pa.array([b.ts for b in batches], _F64)
    head = {
        "cluster": cluster, "node": node, "job_id": job, "ts": ts,
        "seq": pa.array([b.seq for b in batches], _U64),
        "agent_id": pa.array([b.agent_id for b in batches], _STR),
        "gpu_count": pa.array(counts.astype(np.uint16)),
        "lost_gpus": pa.array(np.bincount(at, weights=lost,
                                          minlength=len(batches)).astype(np.uint16)),
        "driver_version": pa.array([b.driver_version or "" for b in batches], _STR),
        "schema_version": pa.array([b.schema_version for b in batches], _U16),
        "kafka_partition": pa.array([item[1] for item in items], _I32),
        "kafka_offset": pa.array([item[2] for item in items], _I64),
    }
    gpus: dict[str, pa.Array] = {
        "cluster": cluster.take(owner), "node": node.take(owner), "job_id": job.take(owner),
        "gpu": pa.array(fields[_GPU_AT["index"]], _U8), "ts": ts.take(owner),
        "uuid": _text(fields[_GPU_AT["uuid"]]), "model": _text(fields[_GPU_AT["model"]]),
    }
    for column, field, typ in _GPU_PLAIN[1:]:
        gpus[column] = pa.array(fields[_GPU_AT[field]], typ)
    xids = fields[_GPU_AT["xid_events"]]
    procs = fields[_GPU_AT["processes"]]
    errors = fields[_GPU_AT["errors"]]
    gpus["xids"] = _lists(xids, [e.xid for x in xids for e in x], _U16)
    gpus["proc_pids"] = _lists(procs, [p.pid for x in procs for p in x], _U32)
    gpus["proc_mem_bytes"] = _lists(procs, [p.used_mem_bytes or 0 for x in procs for p in x],
                                    _U64)
    gpus["read_errors"] = pa.MapArray.from_arrays(
        _offsets(errors), pa.array([k for d in errors for k in d], _STR),
        pa.array([v for d in errors for v in d.values()], _STR))
    # The ledger last: a batch whose GPU rows the store refused leaves no ledger row.
    return {"gpu_samples": _gpu_order(gpus), "sample_batches": pa.table(head)}


def _gpu_order(gpus: dict[str, pa.Array]) -> pa.Table:
    """The gpu_samples columns in the table's own order (as the views selected them)."""
    order = ["cluster", "node", "job_id", "gpu", "ts", "uuid", "model"]
    order += [column for column, _, _ in _GPU_PLAIN[1:-1]]
    order += ["xids", "compute_procs", "proc_pids", "proc_mem_bytes", "read_errors"]
    return pa.table({name: gpus[name] for name in order})


def _step_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    batches: list[StepBatch] = [item[0] for item in items]
    out: dict[str, pa.Table] = {}
    steps: list[StepRecord] = [s for b in batches for s in b.steps]
    if steps:
        counts = np.fromiter((len(b.steps) for b in batches), np.int64, len(batches))
        owner = pa.array(np.repeat(np.arange(len(batches)), counts))
        fields = _transpose([_astuple(s) for s in steps], len(_STEP_AT))
        table: dict[str, pa.Array] = {
            "cluster": pa.array([b.cluster for b in batches], _STR).take(owner)}
        for column, field, typ in _STEP_PLAIN:
            values = fields[_STEP_AT[field]]
            table[column] = _text(values) if field in _NOT_NULL_TEXT else pa.array(values, typ)
            if column == "env_fingerprint":
                nonfinite = fields[_STEP_AT["nonfinite"]]
                table["nonfinite"] = _lists(nonfinite, [n for x in nonfinite for n in x], _STR)
        out["steps"] = pa.table(table)
    events = [(b, e) for b in batches for e in b.events]
    if events:
        out["rank_events"] = pa.table({
            "cluster": pa.array([b.cluster for b, _ in events], _STR),
            "node": pa.array([b.node for b, _ in events], _STR),
            "job_id": pa.array([b.job_id for b, _ in events], _STR),
            "rank": pa.array([e.rank for _, e in events], _U32),
            "ts": pa.array([e.ts for _, e in events], _F64),
            "event": pa.array([e.event for _, e in events], _STR),
            "pid": pa.array([e.pid for _, e in events], _U32),
            "exit_code": pa.array([e.exit_code for _, e in events], _U8),
            "signal": pa.array([e.signal for _, e in events], _U8),
            "reason": pa.array([e.reason or "" for _, e in events], _STR),
            "step": pa.array([e.step for _, e in events], _U64),
            "since": pa.array([e.since for _, e in events], _F64),
            "collective": pa.array([e.collective for _, e in events], _U64),
        })
    return out


def _transpose(rows: list[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """Per-field columns of equal-width tuples (``width`` empty columns for no rows)."""
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _text(values: Sequence[str | None]) -> pa.Array:
    """A text column where a missing value is stored as ``''`` (LowCardinality columns)."""
    return pa.array(values, _STR).fill_null("")


def _offsets(nested: Sequence[Sequence[Any]]) -> pa.Array:
    """Arrow list offsets of ``nested``: 0, then the running total of their lengths."""
    ends = np.fromiter(map(len, nested), np.int32, len(nested))
    return pa.array(np.concatenate(([0], np.cumsum(ends, dtype=np.int32))))


def _lists(nested: Sequence[Sequence[Any]], flat: list[Any], typ: pa.DataType) -> pa.Array:
    """An ``Array(typ)`` column: one list per row of ``nested``, values ``flat``."""
    return pa.ListArray.from_arrays(_offsets(nested), pa.array(flat, typ))
