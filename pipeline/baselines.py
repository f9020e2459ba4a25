"""Baselines stage: every GPU and every rank against its own history.

Decoded records go in; :class:`~trainguard.schemas.records.Anomaly` records come out. Each
(entity, metric) has a row in a vectorized :class:`~trainguard.pipeline.detect.DetectorBank`
(robust baseline + change-point detection, warm-up, hysteresis), so one call handles a
whole Kafka batch with a few numpy operations per metric. Plain Python and numpy, no
Faust: the worker feeds it, tests and benchmarks drive it directly.

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

import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from trainguard.errors import ConfigError
from trainguard.pipeline.detect import BankConfig, Detection, DetectorBank, EntityRegistry
from trainguard.pipeline.detect.registry import DEFAULT_MAX_ENTITIES
from trainguard.schemas.records import Anomaly, GpuSampleBatch, Record, StepBatch, StepRecord

__all__ = ["GPU_METRICS", "RANK_METRICS", "BaselineConfig", "BaselineStage"]

log = logging.getLogger(__name__)

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


class _Meta(msgspec.Struct):
    cluster: str
    node: str | None
    gpu: int | None = None
    job_id: str | None = None
    rank: int | None = None


class _Family:
    """One entity kind: a registry and one bank per metric."""

    def __init__(self, kind: str, metrics: dict[str, str], config: BaselineConfig) -> None:
        self.kind = kind
        self.max_entities = config.max_entities
        #: Entities evicted at the cap since start.
        self.evicted = 0
        self.registry = EntityRegistry()
        self.banks = {
            m: DetectorBank(m, _with_direction(config.bank, d)) for m, d in metrics.items()
        }
        self.meta: dict[str, _Meta] = {}
        #: Which input partition each entity's data comes from: state moves with it.
        self.source: dict[str, str] = {}
        #: Peer group (an int the banks compare) of each job with live entities.
        self.groups: dict[str, int] = {}
        self._next_group = 0

    def update(
        self, keys: list[str], ts: list[float], values: np.ndarray[Any, np.dtype[np.float64]],
        jobs: Sequence[str | None] | None = None,
    ) -> list[tuple[str, Detection]]:
        """Feed one value per key and metric (``values[:, j]`` is metric ``j``).

        ``jobs`` names each key's job: the entities of one job are each other's peers.
        """
        if not keys:
            return []
        self._make_room(keys)
        t = np.asarray(ts, dtype=np.float64)
        rows = self.registry.rows_for(keys, t)
        groups = None if jobs is None else np.fromiter(
            (self._group(j) for j in jobs), dtype=np.int64, count=len(keys))
        found: list[tuple[str, Detection]] = []
        for j, bank in enumerate(self.banks.values()):
            bank.grow(self.registry.n_rows)
            v = np.ascontiguousarray(values[:, j])
            # The bank orders several ticks of one entity by event time itself.
            for finding in bank.update(rows, v, t, groups):
                found.append((self.registry.keys_of([finding.row])[0], finding))
        return found

    def _group(self, job: str | None) -> int:
        if job is None:
            return -1
        g = self.groups.get(job)
        if g is None:
            # Never reused, so a row still holding a gone job's id cannot meet new peers.
            g = self.groups[job] = self._next_group
            self._next_group += 1
        return g

    def suppressed(self) -> dict[str, int]:
        """Departures the banks did not report, by reason (see ``DetectorBank.suppressed``)."""
        out: dict[str, int] = {}
        for bank in self.banks.values():
            for reason, n in bank.suppressed.items():
                out[reason] = out.get(reason, 0) + n
        return out

    def _make_room(self, keys: Sequence[str]) -> None:
        """Evict the least recently seen entities so the new ones among ``keys`` fit.

        A batch's own entities are never evicted: one with more new keys than the cap
        leaves the registry over it until the next batch.
        """
        reg = self.registry
        if len(reg) + len(keys) <= self.max_entities:
            return  # the common case: far from the cap, no need to look closer
        batch = set(keys)
        new = sum(1 for k in batch if reg.get(k) is None)
        over = len(reg) + new - self.max_entities
        if over <= 0:
            return
        rows = reg.least_recent(over, spare=list(batch))
        gone = reg.keys_of(rows)
        for key in gone:
            self.meta.pop(key, None)
            self.source.pop(key, None)
        reg.release(rows)
        for bank in self.banks.values():
            bank.grow(reg.n_rows)
            bank.reset_rows(rows)
        before, self.evicted = self.evicted, self.evicted + len(gone)
        if before == 0 or before // 1000 != self.evicted // 1000:  # a flood stays quiet
            log.warning("baseline entities evicted kind=%s evicted=%d max_entities=%d total=%d "
                        "oldest=%s", self.kind, len(gone), self.max_entities, self.evicted,
                        gone[0] if gone else "")

    def expire(self, now: float, idle_s: float) -> int:
        live = self.live_rows()
        stale = self.registry.last_seen(live) < now - idle_s
        if not stale.any():
            return 0
        for key in self.registry.keys_of(live[stale]):
            self.meta.pop(key, None)
            self.source.pop(key, None)
        live_jobs = {m.job_id for m in self.meta.values()}
        for job in [j for j in self.groups if j not in live_jobs]:
            del self.groups[job]
        freed = self.registry.expire(now, idle_s)
        rows = np.asarray(freed, dtype=np.int64)
        for bank in self.banks.values():
            bank.reset_rows(rows)
        return len(freed)

    def export(self, part: str) -> dict[str, Any]:
        """The state of the entities fed by partition ``part``."""
        keys = [k for k, p in self.source.items() if p == part and k in self.meta]
        rows = np.asarray([self.registry.get(k) for k in keys], dtype=np.int64)
        doc: dict[str, Any] = {
            "keys": np.array(keys, dtype=np.str_),
            "last_seen": self.registry.last_seen(rows),
            "meta": msgspec.to_builtins([self.meta[k] for k in keys]),
            "banks": {},
        }
        for metric, bank in self.banks.items():
            bank.grow(self.registry.n_rows)
            doc["banks"][metric] = bank.state_rows(rows)
        return doc

    def load(self, part: str, doc: dict[str, Any]) -> int:
        """Install exported entities (rows may differ from where they were exported)."""
        keys = [str(k) for k in np.asarray(doc["keys"]).tolist()]
        if not keys:
            return 0
        self._make_room(keys)
        rows = self.registry.rows_for(keys, np.asarray(doc["last_seen"], dtype=np.float64))
        for key, meta in zip(keys, doc["meta"], strict=True):
            self.meta[key] = msgspec.convert(meta, _Meta)
            self.source[key] = part
        for metric, bank in self.banks.items():
            bank.grow(self.registry.n_rows)
            if metric in doc["banks"]:
                bank.load_state_rows(rows, doc["banks"][metric])
        return len(keys)

    def drop(self, part: str) -> int:
        """Forget the entities of a partition this worker no longer owns."""
        keys = [k for k, p in self.source.items() if p == part]
        rows = np.asarray([r for k in keys if (r := self.registry.get(k)) is not None],
                          dtype=np.int64)
        self.registry.release(rows)
        for bank in self.banks.values():
            bank.grow(self.registry.n_rows)
            bank.reset_rows(rows)
        for key in keys:
            self.meta.pop(key, None)
            self.source.pop(key, None)
        return len(keys)

    def live_rows(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Rows that currently belong to an entity."""
        rows = [self.registry.get(k) for k in self.meta]
        return np.asarray([r for r in rows if r is not None], dtype=np.int64)


class BaselineStage:
    """Feeds decoded records to the detector banks; returns wire anomalies."""

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config or BaselineConfig()
        self.gpus = _Family("gpu", GPU_METRICS, self.config)
        self.ranks = _Family("rank", RANK_METRICS, self.config)
        self.now = 0.0
        self._next_snapshot: float | None = None
        self._next_expiry = 0.0
        self.expired = 0

    def suppressed(self) -> dict[str, int]:
        """Departures not reported as anomalies since start, by reason, GPUs and ranks."""
        out = self.gpus.suppressed()
        for reason, n in self.ranks.suppressed().items():
            out[reason] = out.get(reason, 0) + n
        return out

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
        g_keys: list[str] = []
        g_jobs: list[str | None] = []
        g_ts: list[float] = []
        g_vals: list[tuple[float | None, ...]] = []
        r_keys: list[str] = []
        r_jobs: list[str] = []
        r_ts: list[float] = []
        r_vals: list[tuple[float | None, ...]] = []
        g_meta, g_source = self.gpus.meta, self.gpus.source
        r_meta, r_source = self.ranks.meta, self.ranks.source
        now = self.now
        # The hot loop of the worker (one pass per GPU and per rank): one attrgetter call
        # per entity for all its metrics, NaN conversion done on whole arrays afterwards.
        for i, record in enumerate(records):
            part = sources[i] if sources is not None else ""
            if isinstance(record, GpuSampleBatch):
                ts, node, job = record.ts, record.node, record.job_id
                now = max(now, ts)
                for gpu in record.gpus:
                    if gpu.lost:
                        continue  # a lost GPU is its own finding (consistency checks)
                    key = f"{node}/{gpu.index}"
                    meta = g_meta.get(key)
                    if meta is None:
                        g_meta[key] = _Meta(record.cluster, node, gpu=gpu.index, job_id=job)
                        g_source[key] = part
                    elif meta.job_id != job:
                        meta.job_id = job  # the GPU moved to another job (or left it)
                    g_keys.append(key)
                    g_jobs.append(job)
                    g_ts.append(ts)
                    g_vals.append(_GPU_VALUES(gpu))
            elif isinstance(record, StepBatch | StepRecord):
                cluster = record.cluster if isinstance(record, StepBatch) else ""
                steps = record.steps if isinstance(record, StepBatch) else [record]
                for step in steps:
                    now = max(now, step.ts)
                    key = f"{step.job_id}/{step.rank}"
                    if key not in r_meta:
                        r_meta[key] = _Meta(cluster, step.node, job_id=step.job_id, rank=step.rank)
                        r_source[key] = part
                    r_keys.append(key)
                    r_jobs.append(step.job_id)
                    r_ts.append(step.ts)
                    r_vals.append(_RANK_VALUES(step))
        self.now = now
        out = [self._wire("gpu", k, f) for k, f in
               self.gpus.update(g_keys, g_ts, _columns(g_vals, len(GPU_METRICS)), g_jobs)]
        out += [self._wire("rank", k, f) for k, f in
                self.ranks.update(r_keys, r_ts, _columns(r_vals, len(RANK_METRICS)), r_jobs)]
        self._expire()
        return out

    def export(self, part: str) -> bytes:
        """Serialized detector state of the entities fed by input partition ``part``."""
        from trainguard.pipeline.state import encode_arrays

        return encode_arrays({"format": 1, "now": self.now, "gpu": self.gpus.export(part),
                              "rank": self.ranks.export(part)})

    def load(self, part: str, blob: bytes) -> int:
        """Install a partition's exported state; return how many entities it held."""
        from trainguard.pipeline.state import decode_arrays

        doc = decode_arrays(blob)
        if doc.get("format") != 1:
            raise ValueError(f"unknown baseline state format {doc.get('format')!r}")
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

    def snapshot_rows(self) -> list[dict[str, Any]]:
        """``baselines`` table rows for every live (entity, metric) with a baseline."""
        self._next_snapshot = self.now + self.config.snapshot_every_s
        rows: list[dict[str, Any]] = []
        for family in (self.gpus, self.ranks):
            live = family.live_rows()
            if len(live) == 0:
                continue
            keys = family.registry.keys_of(live)
            for metric, bank in family.banks.items():
                bank.grow(family.registry.n_rows)
                mean, scale, n = bank.baseline(live)
                alarm = bank.rows.alarm[live] != 0
                for key, mu, sc, cnt, al in zip(keys, mean, scale, n, alarm, strict=True):
                    if cnt == 0 or not math.isfinite(mu):
                        continue
                    rows.append({
                        "cluster": family.meta[key].cluster if key in family.meta else "",
                        "entity_kind": family.kind, "entity": key, "metric": metric,
                        "ts": self.now, "mean": float(mu), "scale": float(sc),
                        "samples": int(cnt), "in_alarm": bool(al),
                    })
        return rows

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
        meta = family.meta.get(key) or _Meta("", None)
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


_Matrix = np.ndarray[Any, np.dtype[np.float64]]
_GPU_VALUES = operator.attrgetter(*GPU_METRICS)
_RANK_VALUES = operator.attrgetter(*RANK_METRICS)


def _columns(rows: list[tuple[float | None, ...]], width: int) -> _Matrix:
    """Rows of optional numbers → a float matrix, ``None`` (not reported) as NaN."""
    if not rows:
        return np.empty((0, width), dtype=np.float64)
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), width)
    except TypeError:  # some value is None: the slower, rarer path
        return np.array([[math.nan if v is None else v for v in row] for row in rows],
                        dtype=np.float64).reshape(len(rows), width)


def _with_direction(base: BankConfig, direction: str) -> BankConfig:
    from dataclasses import replace

    return replace(base, direction=direction)  # type: ignore[arg-type]

