"""Baselines stage: every GPU and every rank against its own history.

Decoded records go in; :class:`~trainguard.schemas.records.Anomaly` records come out. Each
(entity, metric) has a row in a vectorized :class:`~trainguard.pipeline.detect.DetectorBank`
(robust baseline + change-point detection, warm-up, hysteresis), so one call handles a
whole Kafka batch with a few numpy operations per metric; the batch's readings reach the
banks as one column per metric, with entity rows looked up once per sender
(:mod:`~trainguard.pipeline.detect.points`). Plain Python and numpy, no Faust: the worker
feeds it, tests and benchmarks drive it directly.

Entities: a GPU is ``node/gpu`` (from sample batches), a rank is ``job/rank`` (from step
records). The entities of one job (a GPU's batch names its job when the agent knows it)
are each other's peers: a departure most of them share at the same time (a checkpoint
dip, a phase change of the job) is benign and not reported; the banks count what they
keep out (:meth:`BaselineStage.suppressed`). Everything runs in event time; an entity
silent for ``idle_s`` of event time is expired and its rows are reused. Entity keys come
from the input, so each kind holds at most ``max_entities``: past it the least recently
seen entities are evicted (counted in ``evicted``), never the ones of the batch at hand.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from trainguard.errors import ConfigError
from trainguard.pipeline.baseline_state import copy_doc, max_state_bytes, pack_doc, read_doc
from trainguard.pipeline.detect import BankConfig, Detection
from trainguard.pipeline.detect.family import EntityFamily, EntityMeta
from trainguard.pipeline.detect.points import GpuPoints, RankPoints
from trainguard.pipeline.detect.registry import DEFAULT_MAX_ENTITIES
from trainguard.pipeline.sinks.column_rows import ColumnRows, column_rows
from trainguard.schemas.records import Anomaly, GpuSampleBatch, Record, StepBatch, StepRecord

__all__ = ["GPU_METRICS", "RANK_METRICS", "BaselineConfig", "BaselineStage"]

log = logging.getLogger(__name__)

#: The ``baselines`` table's columns that :meth:`BaselineStage.snapshot_rows` fills.
_BASELINE_SCHEMA = pa.schema([
    ("cluster", pa.string()), ("entity_kind", pa.string()), ("entity", pa.string()),
    ("metric", pa.string()), ("ts", pa.float64()), ("mean", pa.float64()),
    ("scale", pa.float64()), ("samples", pa.uint64()), ("in_alarm", pa.bool_())])

#: GPU metrics and the direction of a departure worth reporting.
GPU_METRICS: dict[str, str] = {"util_gpu_pct": "down", "power_w": "both"}
#: Rank metrics from step records. Loss trends down while training works, so only a rise
#: departs from a rank's own history; a rank whose loss falls away from its peers' is the
#: cross-rank consistency checks' business.
RANK_METRICS: dict[str, str] = {
    "loss": "up",
    "grad_norm": "both",
    "step_time_s": "up",
    "tokens_per_s": "down",
    "samples_per_s": "down",
}


@dataclass(frozen=True)
class BaselineConfig:
    """Thresholds shared by every bank, and entity expiry."""

    bank: BankConfig = field(default_factory=BankConfig)
    #: An entity silent this long (event time) is forgotten.
    idle_s: float = 900.0
    #: How often (event time) baselines are snapshotted into the ``baselines`` table.
    snapshot_every_s: float = 60.0
    #: Entities held per kind (GPUs; ranks): forged job ids or ranks cannot grow the
    #: baselines past it. At the cap the least recently seen are evicted and counted.
    max_entities: int = DEFAULT_MAX_ENTITIES

    def __post_init__(self) -> None:
        if not isinstance(self.max_entities, int) or self.max_entities < 1:
            raise ConfigError(f"max_entities must be an integer >= 1, got {self.max_entities!r}")


class BaselineStage:
    """Feeds decoded records to the detector banks; returns wire anomalies."""

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config or BaselineConfig()
        bank, cap = self.config.bank, self.config.max_entities
        self.gpus = EntityFamily("gpu", GPU_METRICS, bank, cap)
        self.ranks = EntityFamily("rank", RANK_METRICS, bank, cap)
        self.now = 0.0
        self._next_snapshot: float | None = None
        self._next_expiry = 0.0
        self.expired = 0
        self._max_state_bytes: int | None = None

    def suppressed(self) -> dict[str, int]:
        """Departures not reported as anomalies since start, by reason, GPUs and ranks."""
        out = self.gpus.suppressed()
        for reason, n in self.ranks.suppressed().items():
            out[reason] = out.get(reason, 0) + n
        return out

    def quiet_points(self) -> tuple[int, int]:
        """Points the compiled quiet path took in and passed on since start, GPUs and ranks."""
        (gt, gp), (rt, rp) = self.gpus.quiet_points(), self.ranks.quiet_points()
        return gt + rt, gp + rp

    @property
    def evicted(self) -> int:
        """Entities (GPUs and ranks) evicted at the ``max_entities`` cap since start."""
        return self.gpus.evicted + self.ranks.evicted

    def observe(
        self, records: Sequence[Record], sources: Sequence[str] | None = None
    ) -> list[Anomaly]:
        """Update every baseline with ``records``; return the anomalies they revealed.

        ``sources`` names each record's input partition (see :mod:`trainguard.pipeline.state`).
        """
        gpus, ranks = GpuPoints(self.gpus), RankPoints(self.ranks)
        now = self.now
        for i, record in enumerate(records):
            if isinstance(record, GpuSampleBatch):
                now = max(now, record.ts)
                gpus.add(record, sources, i)
            elif isinstance(record, StepBatch | StepRecord):
                ranks.add(record, sources, i)
        gpu_points, rank_points = gpus.columns(), ranks.columns()
        latest = _latest(rank_points[1])
        self.now = now if latest is None else max(now, latest)
        out = [self._wire("gpu", k, f) for k, f in self.gpus.update(*gpu_points)]
        out += [self._wire("rank", k, f) for k, f in self.ranks.update(*rank_points)]
        self._expire()
        return out

    def export(self, part: str) -> bytes:
        """Serialized detector state of the entities fed by input partition ``part``."""
        return self.export_later(part)()

    def export_later(self, part: str) -> Callable[[], bytes]:
        """Copy ``part``'s state now; the call returned packs it (run it off the loop)."""
        return functools.partial(pack_doc, copy_doc(self.now, self._families(), part))

    def load(self, part: str, blob: bytes) -> int:
        """Install a partition's exported state; return how many entities it held.

        A blob that does not unpack raises (the caller counts it and starts fresh).
        """
        if self._max_state_bytes is None:
            self._max_state_bytes = max_state_bytes(self._families())
        doc = read_doc(blob, self._max_state_bytes)
        self.now = max(self.now, float(doc["now"]))
        try:
            return self.gpus.load(part, doc["gpu"]) + self.ranks.load(part, doc["rank"])
        except ValueError as exc:
            # Detector state of another layout (a worker upgraded across a detector
            # change): its entities warm up again rather than stop the worker.
            self.drop(part)
            log.warning("baseline state not loaded partition=%s error=%s; warming up", part,
                        exc)
            return 0

    def _families(self) -> dict[str, EntityFamily]:
        return {"gpu": self.gpus, "rank": self.ranks}

    def drop(self, part: str) -> int:
        """Forget every entity fed by ``part`` (a partition this worker lost)."""
        return self.gpus.drop(part) + self.ranks.drop(part)

    def partitions(self) -> set[str]:
        """Input partitions whose entities this stage holds."""
        return set(self.gpus.source.values()) | set(self.ranks.source.values())

    def snapshot_due(self) -> bool:
        """True when the next baseline snapshot is due (event time)."""
        if self._next_snapshot is None:
            self._next_snapshot = self.now + self.config.snapshot_every_s
            return False
        return self.now >= self._next_snapshot

    def snapshot_rows(self) -> ColumnRows:
        """``baselines`` table rows for every live (entity, metric) with a baseline.

        As columns (:class:`~trainguard.pipeline.sinks.column_rows.ColumnRows`): a snapshot
        of 5,000 nodes is 280,000 rows, which as dicts stalled the batch making them.
        """
        self._next_snapshot = self.now + self.config.snapshot_every_s
        cols: dict[str, list[Any]] = {name: [] for name in _BASELINE_SCHEMA.names}
        for family in (self.gpus, self.ranks):
            live = family.live_rows()
            if len(live) == 0:
                continue
            keys = np.array(family.registry.keys_of(live), dtype=object)
            meta = family.meta
            clusters = np.array([meta[k].cluster if k in meta else "" for k in keys],
                                dtype=object)
            for metric, bank in family.banks.items():
                bank.grow(family.registry.n_rows)
                mean, scale, n = bank.baseline(live)
                keep = np.flatnonzero((n != 0) & np.isfinite(mean))
                for name, values in (
                        ("cluster", clusters[keep]), ("entity", keys[keep]),
                        ("entity_kind", np.full(len(keep), family.kind, dtype=object)),
                        ("metric", np.full(len(keep), metric, dtype=object)),
                        ("ts", np.full(len(keep), self.now)), ("mean", mean[keep]),
                        ("scale", scale[keep]), ("samples", n[keep].astype(np.uint64)),
                        ("in_alarm", bank.rows.alarm[live[keep]] != 0)):
                    cols[name].append(values)
        return column_rows({name: np.concatenate(parts) if parts else [] for name, parts
                            in cols.items()}, _BASELINE_SCHEMA)

    def _expire(self) -> None:
        # A scan of every entity: cheap once a minute, too dear on every batch.
        if self.now < self._next_expiry:
            return
        self._next_expiry = self.now + min(60.0, self.config.idle_s / 4)
        for family in (self.gpus, self.ranks):
            n = family.expire(self.now, self.config.idle_s)
            self.expired += n

    def _wire(self, kind: str, key: str, f: Detection) -> Anomaly:
        family = self.gpus if kind == "gpu" else self.ranks
        meta = family.meta.get(key) or EntityMeta("", None)
        return Anomaly(
            cluster=meta.cluster or "unknown",
            entity_kind="gpu" if kind == "gpu" else "rank",
            entity=key,
            node=meta.node,
            gpu_index=meta.gpu,
            job_id=meta.job_id,
            rank=meta.rank,
            metric=f.metric,
            pattern=f.kind,
            first_seen=f.first_seen,
            ts=f.ts,
            value=f.value,
            baseline=f.baseline,
            scale=f.scale,
            score=f.score,
            window=f.window,
            detector=f.detector,
            detector_version=f.version,
        )


def _latest(ts: np.ndarray[Any, np.dtype[np.float64]]) -> float | None:
    """The latest of ``ts`` ignoring NaN, as ``max(now, t)`` point by point would see it."""
    latest = float(np.fmax.reduce(ts)) if len(ts) else math.nan
    return None if math.isnan(latest) else latest
