"""Column blocks of the two high-volume records: Arrow tables, one per stored table.

A node's sample batch (8 GPUs) and a node's step batch (its ranks) arrive at cluster
scale; their rows go to the store as columns (:class:`pyarrow.Table`). A whole batch of
records is read into columns by compiled code that holds no GIL
(:func:`~trainguard.pipeline.sinks.record_pack.unpack_records`: msgspec encodes the
records as msgpack, a numba kernel notes every field; without numba,
:func:`~trainguard.pipeline.sinks.record_json.read_records`: JSON lines, parsed by Arrow's
C++ reader against the schemas below); the GPUs of sample batches and the ranks of step
batches are flattened out of their lists, and each batch's own fields (cluster, node,
job, time) spread over its rows with one ``take``. The few values in lists inside a GPU or
rank (XIDs, processes, read errors, non-finite names) and rank events are read only from
the records that have any. No dict per row, no Python value per field.

The tables and values are exactly what the intake views of ``schemas/sql`` (009 to 019)
made of the same records: a missing text becomes ``''``, a process's missing memory ``0``;
times stay float seconds, which the store converts to ``DateTime64(3)`` as its views'
``toDateTime64`` did. Each table's columns are named, in order, as in its ``CREATE
TABLE``; ``ingested_at`` keeps its default, so a record written twice still collapses in
the ReplacingMergeTree. A value the column type cannot hold raises
:class:`~trainguard.pipeline.store.errors.StoreDataError`, the same verdict the store
gives a refused value, so the sink bisects it down to its record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from trainguard.pipeline.sinks.record_json import (
    READ_F32,
    empty_maps,
    flat_fields,
    list_column,
    read_records,
)
from trainguard.pipeline.sinks.record_pack import AVAILABLE as PACKED
from trainguard.pipeline.sinks.record_pack import PackSpec, unpack_records
from trainguard.pipeline.store.errors import StoreDataError

__all__ = ["IntakeItem", "sample_tables", "step_tables", "warm_up"]

#: One intake record with the Kafka partition and offset of its message.
IntakeItem = tuple[Any, int, int]

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
_NOT_NULL_TEXT = frozenset({"uuid", "model", "param_checksum", "env_fingerprint",
                            "seed_fingerprint"})
#: Errors of the data that mean "this record does not fit its columns".
_DATA_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, msgspec.EncodeError)


def _read_type(typ: pa.DataType) -> pa.DataType:
    return READ_F32 if typ == _F32 else typ


def _fields(plain: list[tuple[str, str, pa.DataType]], *extra: pa.Field) -> pa.DataType:
    return pa.struct([pa.field(f, _read_type(t)) for _, f, t in plain] + list(extra))


_GPU_READ = _fields(
    _GPU_PLAIN, pa.field("uuid", _STR), pa.field("model", _STR),
    pa.field("xid_events", pa.list_(pa.struct([pa.field("xid", _U16)]))),
    pa.field("processes", pa.list_(pa.struct([pa.field("pid", _U32),
                                               pa.field("used_mem_bytes", _U64)]))))
#: What a sample batch's JSON line is read as (``errors``: see ``_read_errors``).
_SAMPLE_READ = pa.schema([
    ("cluster", _STR), ("node", _STR), ("job_id", _STR), ("ts", _F64), ("seq", _U64),
    ("agent_id", _STR), ("driver_version", _STR), ("schema_version", _U16),
    ("gpus", pa.list_(_GPU_READ)),
])
_EVENT_PLAIN: list[tuple[str, str, pa.DataType]] = [
    ("rank", "rank", _U32), ("ts", "ts", _F64), ("event", "event", _STR),
    ("pid", "pid", _U32), ("exit_code", "exit_code", _U8), ("signal", "signal", _U8),
    ("reason", "reason", _STR), ("step", "step", _U64), ("since", "since", _F64),
    ("collective", "collective", _U64),
]
#: What a step batch's JSON line is read as.
_STEP_READ = pa.schema([
    ("cluster", _STR), ("node", _STR), ("job_id", _STR),
    ("steps", pa.list_(_fields(_STEP_PLAIN, pa.field("nonfinite", pa.list_(_STR))))),
    ("events", pa.list_(_fields(_EVENT_PLAIN))),
])
_EVENTS_READ = pa.schema([_STEP_READ.field(name) for name in ("cluster", "node", "job_id",
                                                               "events")])


def _pack_spec(schema: pa.Schema, items: str, counted: tuple[str, ...],
               element_counted: tuple[str, ...]) -> PackSpec:
    """What ``unpack_records`` reads of ``schema``'s records: the same fields and types."""
    element = schema.field(items).type.value_type
    return PackSpec(
        top=tuple((f.name, f.type) for f in schema if f.name not in (items, *counted)),
        items=items,
        element=tuple((f.name, f.type) for f in element if f.name not in element_counted),
        counted=counted, element_counted=element_counted)


_SAMPLE_PACK = _pack_spec(_SAMPLE_READ, "gpus", (), ("xid_events", "processes", "errors"))
_STEP_PACK = _pack_spec(_STEP_READ, "steps", ("events",), ("nonfinite",))


def sample_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    """``sample_batches`` and ``gpu_samples`` of sample batches, as Arrow tables."""
    try:
        return _sample_tables(items)
    except _DATA_ERRORS as exc:
        raise StoreDataError(f"sample batch does not fit its columns: {exc}") from None


def step_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    """``steps`` (and ``rank_events`` when any) of step batches, as Arrow tables."""
    try:
        return _step_tables(items)
    except _DATA_ERRORS as exc:
        raise StoreDataError(f"step batch does not fit its columns: {exc}") from None


def _column(value: pa.Array, typ: pa.DataType, text: bool = False) -> pa.Array:
    """A read column as stored: float32 narrowed, a missing text ``''``."""
    if text:
        return value.fill_null("")
    return value.cast(typ) if typ == _F32 else value


def _sample_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    if not items:
        return {}
    records = [item[0] for item in items]
    if PACKED:
        packed = unpack_records(records, _SAMPLE_PACK)
        head, owner, fields = packed.head, packed.owner, packed.fields
        counts = packed.lengths["gpus"]
        lengths = packed.element_lengths
        gpus_of = _elements(records, "gpus")
        lists = {
            "xids": _nested(gpus_of, lengths["xid_events"], _xids, _U16),
            "proc_pids": _nested(gpus_of, lengths["processes"], _pids, _U32),
            "proc_mem_bytes": _nested(gpus_of, lengths["processes"], _proc_mem, _U64),
        }
        errors = np.flatnonzero(lengths["errors"])
    else:
        read = read_records(records, _SAMPLE_READ)
        head = {name: read.column(name).chunk(0) for name in read.column_names}
        owner_array, fields = flat_fields(head["gpus"])
        owner, counts = owner_array.to_numpy(), head["gpus"].value_lengths().to_numpy()
        lists = {
            "xids": list_column(fields["xid_events"], "xid"),
            "proc_pids": list_column(fields["processes"], "pid"),
            "proc_mem_bytes": list_column(fields["processes"], "used_mem_bytes", 0),
        }
        gpus_of = _elements(records, "gpus")
        errors = np.array([i for i, g in enumerate(gpus_of()) if g.errors], np.int64)
    lost = fields["lost"].fill_null(False)
    cluster, node, ts = head["cluster"], head["node"], head["ts"]
    job = head["job_id"].fill_null("")
    lost_gpus = np.bincount(owner, weights=lost.to_numpy(zero_copy_only=False),
                            minlength=len(items))
    batches = {
        "cluster": cluster, "node": node, "job_id": job, "ts": ts, "seq": head["seq"],
        "agent_id": head["agent_id"], "gpu_count": pa.array(counts.astype(np.uint16)),
        "lost_gpus": pa.array(lost_gpus.astype(np.uint16)),
        "driver_version": head["driver_version"].fill_null(""),
        "schema_version": head["schema_version"],
        "kafka_partition": pa.array([item[1] for item in items], _I32),
        "kafka_offset": pa.array([item[2] for item in items], _I64),
    }
    gpus: dict[str, pa.Array] = {
        "cluster": cluster.take(owner), "node": node.take(owner), "job_id": job.take(owner),
        "gpu": fields["index"], "ts": ts.take(owner),
        "uuid": _column(fields["uuid"], _STR, True),
        "model": _column(fields["model"], _STR, True), "lost": lost,
    }
    for column, field, typ in _GPU_PLAIN[2:]:
        gpus[column] = _column(fields[field], typ)
    gpus.update(lists)
    gpus["read_errors"] = _read_errors(gpus_of, errors, len(owner))
    # The ledger last: a batch whose GPU rows the store refused leaves no ledger row.
    return {"gpu_samples": _gpu_order(gpus), "sample_batches": pa.table(batches)}


def _elements(records: Sequence[Any], items: str) -> Callable[[], list[Any]]:
    """The elements of the records' ``items`` lists, flattened once when first asked for."""
    return functools.cache(lambda: [e for record in records for e in getattr(record, items)])


def _nested(elements: Callable[[], list[Any]], lengths: np.ndarray,
            values: Callable[[Any], list[Any]], typ: pa.DataType) -> pa.ListArray:
    """An ``Array(T)`` column: ``values`` of the elements whose list is not empty."""
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    found = np.flatnonzero(lengths)
    flat = [] if not len(found) else [v for i in found for v in values(elements()[i])]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, typ))


def _xids(gpu: Any) -> list[int]:
    return [event.xid for event in gpu.xid_events]


def _pids(gpu: Any) -> list[int]:
    return [process.pid for process in gpu.processes]


def _proc_mem(gpu: Any) -> list[int]:
    return [0 if p.used_mem_bytes is None else p.used_mem_bytes for p in gpu.processes]


def _read_errors(gpus: Callable[[], list[Any]], found: np.ndarray, rows: int) -> pa.Array:
    """The ``read_errors`` maps, read off the GPUs at ``found`` (few GPUs have any)."""
    # Not through the JSON: Arrow's reader has no maps.
    if not len(found):
        return empty_maps(rows, _STR, _STR)
    errors: list[dict[str, str]] = [gpus()[i].errors for i in found]
    lengths = np.zeros(rows, np.int32)
    lengths[found] = [len(e) for e in errors]
    return pa.MapArray.from_arrays(
        pa.array(np.concatenate(([0], np.cumsum(lengths, dtype=np.int32)))),
        pa.array([k for e in errors for k in e], _STR),
        pa.array([v for e in errors for v in e.values()], _STR))


def _gpu_order(gpus: dict[str, pa.Array]) -> pa.Table:
    """The gpu_samples columns in the table's own order (as the views selected them)."""
    order = ["cluster", "node", "job_id", "gpu", "ts", "uuid", "model"]
    order += [column for column, _, _ in _GPU_PLAIN[1:-1]]
    order += ["xids", "compute_procs", "proc_pids", "proc_mem_bytes", "read_errors"]
    return pa.table({name: gpus[name] for name in order})


def _step_tables(items: Sequence[IntakeItem]) -> dict[str, pa.Table]:
    if not items:
        return {}
    records = [item[0] for item in items]
    if PACKED:
        packed = unpack_records(records, _STEP_PACK)
        head, owner, fields = packed.head, packed.owner, packed.fields
        nonfinite = _nested(_elements(records, "steps"), packed.element_lengths["nonfinite"],
                            _nonfinite, _STR)
        with_events = np.flatnonzero(packed.lengths["events"])
    else:
        read = read_records(records, _STEP_READ)
        head = {name: read.column(name).chunk(0) for name in read.column_names}
        owner_array, fields = flat_fields(head["steps"])
        owner = owner_array.to_numpy()
        nonfinite = list_column(fields["nonfinite"])
        with_events = np.arange(len(records))
    out: dict[str, pa.Table] = {}
    if len(owner):
        table: dict[str, pa.Array] = {"cluster": head["cluster"].take(owner)}
        for column, field, typ in _STEP_PLAIN:
            table[column] = _column(fields[field], typ, field in _NOT_NULL_TEXT)
            if column == "env_fingerprint":
                table["nonfinite"] = nonfinite
        out["steps"] = pa.table(table)
    if len(with_events):
        events = _rank_events([records[i] for i in with_events])
        if events is not None:
            out["rank_events"] = events
    return out


def _nonfinite(step: Any) -> list[str]:
    return list(step.nonfinite)


def _rank_events(records: list[Any]) -> pa.Table | None:
    """``rank_events`` of the step batches that have any (few do): through their JSON."""
    read = read_records(records, _EVENTS_READ)
    head = {name: read.column(name).chunk(0) for name in read.column_names}
    owner, fields = flat_fields(head["events"])
    if not len(owner):
        return None
    events = {name: head[name].take(owner) for name in ("cluster", "node", "job_id")}
    for column, field, typ in _EVENT_PLAIN:
        events[column] = _column(fields[field], typ, column == "reason")
    return pa.table(events)


def warm_up() -> None:
    """Compile the msgpack kernel now (or load numba's cache), not on the first write."""
    from trainguard.schemas.records import GpuSample, GpuSampleBatch, StepBatch, StepRecord

    sample = GpuSampleBatch(cluster="c", node="n", ts=0.0, seq=0, agent_id="a",
                            gpus=[GpuSample(index=0, uuid="u", lost=False, power_w=1.0)])
    step = StepBatch(cluster="c", node="n", job_id="j", ts=0.0, seq=0, agent_id="a",
                     steps=[StepRecord(job_id="j", rank=0, world_size=1, node="n", step=0,
                                       ts=0.0)])
    sample_tables([(sample, 0, 0)])
    step_tables([(step, 0, 0)])
