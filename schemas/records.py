"""The wire contract: every record that crosses Kafka, as msgspec Structs.

One module is the single source of truth for producers (node agents) and consumers
(stream workers). JSON Schema files under ``schemas/json/`` are generated from these
classes (``python -m trainguard.schemas.generate``) and a test fails when they drift.

Conventions
-----------
* Every record carries ``kind`` (a tag, so one decoder can tell records apart) and
  ``schema_version``. Adding an optional field keeps the version; removing or
  retyping a field bumps it. Unknown fields are ignored so that a newer agent can
  talk to an older worker.
* Times are Unix epoch seconds (UTC) as floats, in *event time*: when the thing
  happened on the node, not when the pipeline saw it.
* A value a device or trainer does not report is ``None``, never a made-up zero.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, cast, get_args

import msgspec
from msgspec import Meta

__all__ = [
    "CHECK_NAMES",
    "MAX_CLAIMS_PER_BATCH",
    "MAX_GPUS_PER_BATCH",
    "MAX_CHANGED_FILES",
    "MAX_HASH_CHARS",
    "NAME_PATTERN",
    "SCHEMA_VERSION",
    "STEP_FLOAT_FIELDS",
    "AgentCounters",
    "Alert",
    "Anomaly",
    "CheckName",
    "CheckpointEvent",
    "Finding",
    "GpuProcess",
    "GpuSample",
    "GpuSampleBatch",
    "Heartbeat",
    "RankClaim",
    "Record",
    "StepBatch",
    "StepRecord",
    "WitnessReport",
    "XidEvent",
    "check_name",
]

from trainguard.schemas.ranks import (
    MAX_EVENTS_PER_BATCH,
    MAX_MANIFESTS_PER_BATCH,
    EnvManifest,
    RankEvent,
)
from trainguard.schemas.types import (  # noqa: F401  (re-exported)
    MAX_CHANGED_FILES,
    MAX_GPUS_PER_BATCH,
    MAX_HASH_CHARS,
    NAME_PATTERN,
    SCHEMA_VERSION,
    EpochSeconds,
    FilePath,
    Hash,
    HexDigest,
    Name,
    NonNegFloat,
    NonNegInt,
    Percent,
    ShortText,
    StrictName,
    UInt8,
    UInt16,
    UInt32,
    Version,
)

#: The registry of consistency checks: every name a :class:`Finding` can carry in ``check``.
#: The checks, the simulator's ground truth, the dashboards and the scorecard all take their
#: names from here. On the wire ``Finding.check`` stays a plain name, so that an older worker
#: still reads the findings of a newer one that has gained a check.
CheckName = Literal[
    "agent_silent", "checkpoint_digest", "clock_skew", "code_changed", "code_fingerprint",
    "conflicting_report", "forged_telemetry", "gpu_throttled", "grad_norm_mismatch",
    "job_shift",
    "job_stalled", "local_grad_outlier", "loss_outlier", "lr_mismatch", "node_idle",
    "param_divergence", "rank_exited", "rank_hung", "rank_missing", "restart_divergence",
    "seed_mismatch", "step_skew", "straggler", "witness_mismatch",
]
#: The registry's names, sorted.
CHECK_NAMES: Final[tuple[CheckName, ...]] = get_args(CheckName)


def check_name(name: str) -> CheckName:
    """``name`` as a registered check's name; ``ValueError`` naming the known ones if not."""
    if name not in CHECK_NAMES:
        raise ValueError(f"unknown check {name!r}; expected one of: {', '.join(CHECK_NAMES)}")
    return cast("CheckName", name)


# ``gc=False``: records are immutable trees that never hold themselves, so the cyclic garbage
# collector need not track them (their lists and dicts it still does); a worker decodes tens
# of thousands per batch, and tracking them cost a quarter of the decode (issue #17).
class _Base(msgspec.Struct, kw_only=True, frozen=True, tag_field="kind", omit_defaults=False,
            gc=False):
    """Common base: tagged by ``kind``; keyword-only so fields can be added safely."""


class XidEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One NVIDIA XID error reported by the driver for a GPU."""

    xid: UInt16
    ts: EpochSeconds
    detail: str | None = None


class GpuProcess(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One compute process running on a GPU."""

    pid: UInt32
    used_mem_bytes: NonNegInt | None = None


# Untracked by the garbage collector like the records (see ``_Base``): eight per batch.
class GpuSample(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    """One GPU's readings at one tick. Unsupported fields stay ``None`` (and off the wire)."""

    index: Annotated[int, Meta(ge=0, le=255)]
    uuid: ShortText | None = None
    model: ShortText | None = None
    #: The GPU fell off the bus (NVML "GPU is lost"); every reading is then ``None``.
    lost: bool = False
    util_gpu_pct: Percent | None = None
    util_mem_pct: Percent | None = None
    mem_used_bytes: NonNegInt | None = None
    mem_total_bytes: NonNegInt | None = None
    power_w: NonNegFloat | None = None
    power_limit_w: NonNegFloat | None = None
    temp_c: Annotated[float, Meta(ge=-50, le=200)] | None = None
    sm_clock_mhz: UInt32 | None = None
    mem_clock_mhz: UInt32 | None = None
    #: NVML clock-event (throttle) reasons bitmask, as ``nvmlDeviceGetCurrentClocksEventReasons``.
    clock_event_reasons: NonNegInt | None = None
    pcie_rx_bytes_s: NonNegFloat | None = None
    pcie_tx_bytes_s: NonNegFloat | None = None
    #: Cumulative NVLink throughput counters summed over links, where supported.
    nvlink_rx_bytes: NonNegInt | None = None
    nvlink_tx_bytes: NonNegInt | None = None
    ecc_corrected: NonNegInt | None = None
    ecc_uncorrected: NonNegInt | None = None
    remapped_rows_correctable: UInt32 | None = None
    remapped_rows_uncorrectable: UInt32 | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    #: XID events seen since the previous tick (most recent last).
    xid_events: tuple[XidEvent, ...] = ()
    compute_procs: UInt16 | None = None
    #: The compute processes behind ``compute_procs``, with their GPU memory, where readable.
    processes: tuple[GpuProcess, ...] = ()
    #: Why a reading failed (e.g. ``{"power_w": "NVML_ERROR_UNKNOWN"}``); unsupported fields
    #: are simply absent, this is for errors worth seeing.
    errors: dict[str, str] = {}


class GpuSampleBatch(_Base, tag="gpu_sample_batch", frozen=True, kw_only=True):
    """All GPUs of one node at one tick: one Kafka message per node per tick."""

    schema_version: Version = SCHEMA_VERSION
    cluster: StrictName
    node: StrictName
    ts: EpochSeconds
    #: Per-agent-run sequence number; with ``agent_id`` it orders and dedups batches.
    seq: NonNegInt
    agent_id: Name
    driver_version: ShortText | None = None
    #: One sample per GPU (indices unique, checked at ingest), at most ``MAX_GPUS_PER_BATCH``.
    gpus: Annotated[list[GpuSample], Meta(max_length=MAX_GPUS_PER_BATCH)]
    #: The training job this node's GPUs are running, when the agent knows it (from its
    #: ranks' step reports). The agent then keys the batch by job, so that a job's GPU
    #: samples meet its step records in one partition for the cross-node checks.
    job_id: StrictName | None = None


class StepRecord(_Base, tag="step", frozen=True, kw_only=True):
    """One training rank's report of one optimizer step."""

    schema_version: Version = SCHEMA_VERSION
    job_id: StrictName
    rank: UInt32
    #: Bounded again at ingest by the worker's ``max_world_size`` (dead letter past it).
    world_size: Annotated[int, Meta(ge=1, le=2**32 - 1)]
    node: StrictName
    step: NonNegInt
    ts: EpochSeconds
    local_rank: UInt16 | None = None
    gpu_index: UInt8 | None = None
    loss: float | None = None
    grad_norm: float | None = None
    lr: float | None = None
    step_time_s: NonNegFloat | None = None
    samples_per_s: NonNegFloat | None = None
    tokens_per_s: NonNegFloat | None = None
    loss_scale: float | None = None
    #: Hash of the model parameters (or optimizer state) after the step; replicas must agree.
    param_checksum: Hash | None = None
    #: Hash of code, config, library versions and seeds; must agree across ranks and stay put.
    env_fingerprint: Hash | None = None
    #: Fields the trainer reported as NaN or ±inf. JSON cannot carry them, so they arrive as
    #: ``None`` and are named here: a NaN loss is a finding, not a missing value.
    nonfinite: Annotated[tuple[Annotated[str, Meta(max_length=32)], ...], Meta(max_length=16)] = ()
    #: Place in the parallel layout. Ranks with equal ``(tp_rank, pp_rank)`` are data-
    #: parallel replicas and must hold identical parameters; ``None`` means pure data
    #: parallelism (every rank is a replica of every other).
    dp_rank: UInt32 | None = None
    tp_rank: UInt32 | None = None
    pp_rank: UInt32 | None = None
    #: This rank's own gradient norm before the all-reduce (``grad_norm`` is the reduced
    #: one, equal on every rank): where one rank's corrupted gradient shows.
    local_grad_norm: NonNegFloat | None = None
    #: Seconds this rank computed before waiting for its peers in the step's collectives
    #: (``step_time_s`` includes that wait, so it is equal across ranks): where a slow
    #: rank or node shows.
    compute_time_s: NonNegFloat | None = None
    #: Hash of the seeds this rank draws data order and dropout from; replicas agree on it
    #: and it stays put for the run.
    seed_fingerprint: Hash | None = None
    #: The sending process as the node's kernel saw it (``SCM_CREDENTIALS`` on the step
    #: socket): set by the agent, overriding whatever the trainer wrote; ``None`` for steps
    #: that came another way (a tailed file).
    pid: UInt32 | None = None
    uid: UInt32 | None = None
    #: Which parameter shard this rank holds (FSDP/ZeRO-3/HSDP: its index in the shard
    #: group) and its expert-parallel rank: with ``tp_rank`` and ``pp_rank`` they define the
    #: replica group, the ranks that must hold identical parameters. ``None``: unsharded.
    shard: UInt32 | None = None
    ep_rank: UInt32 | None = None
    #: The data epoch the step drew from. It travels on its own so that a seed fingerprint
    #: that includes it (a sampler's ``set_epoch``) changing at an epoch boundary is not a
    #: changed seed.
    data_epoch: NonNegInt | None = None
    #: The step whose parameters ``param_checksum`` hashes, when not this one (the trainer
    #: kit computes it on the device and reports it with a later step, to avoid a sync).
    checksum_step: NonNegInt | None = None


#: The float measurements of a step, in the order ``StepReporter.report`` takes them; these
#: are the fields a trainer can report as NaN/inf (named then in ``StepRecord.nonfinite``).
STEP_FLOAT_FIELDS = (
    "loss",
    "grad_norm",
    "lr",
    "step_time_s",
    "samples_per_s",
    "tokens_per_s",
    "loss_scale",
    "local_grad_norm",
    "compute_time_s",
)


class RankClaim(msgspec.Struct, kw_only=True, frozen=True):
    """A second live process claimed a job's rank that the agent had bound to another.

    Written by the node agent from the kernel's credentials of both senders, never from
    what they say; the claimant's reports were refused. The worker turns it into a
    ``conflicting_report`` finding naming both processes.
    """

    rank: UInt32
    #: When the agent refused the claim (its own clock).
    ts: EpochSeconds
    #: The step (or checkpoint step) the refused report named.
    step: NonNegInt | None = None
    #: The refused claimant, and the process holding the rank since ``holder_since``.
    pid: UInt32
    uid: UInt32
    holder_pid: UInt32
    holder_uid: UInt32
    holder_since: EpochSeconds | None = None


#: Rank claims one step batch carries at most (the agent reports each claimant once).
MAX_CLAIMS_PER_BATCH: Final = 256


class StepBatch(_Base, tag="step_batch", frozen=True, kw_only=True):
    """Step records of one job's ranks on one node, sent together (keyed by job)."""

    schema_version: Version = SCHEMA_VERSION
    cluster: StrictName
    node: StrictName
    job_id: StrictName
    ts: EpochSeconds
    seq: NonNegInt
    agent_id: Name
    steps: list[StepRecord]
    #: Processes refused because another live process holds the rank they claimed.
    claims: Annotated[tuple[RankClaim, ...], Meta(max_length=MAX_CLAIMS_PER_BATCH)] = ()
    #: Rank processes that exited, stopped, resumed, said goodbye or wait in a collective.
    events: Annotated[tuple[RankEvent, ...], Meta(max_length=MAX_EVENTS_PER_BATCH)] = ()
    #: The manifests behind ranks' ``env_fingerprint`` (sent when they change).
    manifests: Annotated[tuple[EnvManifest, ...], Meta(max_length=MAX_MANIFESTS_PER_BATCH)] = ()


class AgentCounters(msgspec.Struct, kw_only=True, frozen=True):
    """An agent's own counters since it started: what it sent, spooled and dropped.

    Counters are cumulative; gauges (``spool_*``, latency, CPU, RSS) are current values.
    """

    batches_sent: NonNegInt = 0
    steps_received: NonNegInt = 0
    steps_malformed: NonNegInt = 0
    #: Step datagrams the trainers' reporters could not hand over (agent down or full).
    datagrams_dropped: NonNegInt = 0
    #: Step records the agent itself dropped (its intake queue was full).
    steps_dropped: NonNegInt = 0
    send_errors: NonNegInt = 0
    #: Records waiting in the on-disk spool for Kafka, and their bytes.
    spool_depth: NonNegInt = 0
    spool_bytes: NonNegInt = 0
    #: Records discarded (oldest first) because the spool was full.
    spool_dropped: NonNegInt = 0
    collect_errors: NonNegInt = 0
    #: Ticks whose collection took longer than the interval.
    tick_overruns: NonNegInt = 0
    #: Spool append → Kafka ack, over the last heartbeat interval.
    send_latency_ms_p50: NonNegFloat | None = None
    send_latency_ms_max: NonNegFloat | None = None
    #: The agent's own CPU (% of one core, over the last heartbeat interval) and memory.
    cpu_pct: NonNegFloat | None = None
    rss_bytes: NonNegInt | None = None
    #: Failed writes to the spool's disk (full, I/O error); records wait in memory meanwhile.
    spool_write_errors: NonNegInt = 0
    #: Records held in memory because the spool's disk refused them.
    spool_memory_depth: NonNegInt = 0
    #: Messages that can never be sent (refused by Kafka for good, or too large), written to
    #: the node's local dead-letter file.
    dead_lettered: NonNegInt = 0
    #: Step reporters the agent's intake forgot because it tracked its maximum of them.
    reporters_evicted: NonNegInt = 0
    #: Files the agent's witness hashed, and files it could not (too large, vanished,
    #: unreadable, changed while hashed); the reasons are in its log and witness reports.
    witness_hashed: NonNegInt = 0
    witness_skipped: NonNegInt = 0
    #: Step socket datagrams refused: another live process holds the (job, rank) they
    #: claim, or the kernel attached no credentials. ``claim_conflicts``: distinct
    #: claimants reported (as ``StepBatch.claims``).
    claims_refused: NonNegInt = 0
    claim_conflicts: NonNegInt = 0
    #: Rank lifecycle events queued for the jobs' step batches (the rank watch's exits,
    #: stops and resumes; trainers' ``bye`` and ``waiting``); those dropped because the
    #: queue was full, and manifests dropped likewise.
    rank_events: NonNegInt = 0
    rank_events_dropped: NonNegInt = 0
    manifests_dropped: NonNegInt = 0


class Heartbeat(_Base, tag="heartbeat", frozen=True, kw_only=True):
    """An agent's liveness and self-report, sent every few seconds."""

    schema_version: Version = SCHEMA_VERSION
    cluster: StrictName
    node: StrictName
    ts: EpochSeconds
    seq: NonNegInt
    agent_id: Name
    agent_version: str
    uptime_s: NonNegFloat
    backend: Literal["nvml", "simulated"]
    gpu_count: UInt16
    counters: AgentCounters = AgentCounters()
    #: The training job the node's GPUs run, when the agent knows it (as on its sample
    #: batches). The heartbeat is then keyed by the job, so the worker judging the job
    #: sees its nodes' heartbeats stop (``agent_silent``).
    job_id: StrictName | None = None


class Anomaly(_Base, tag="anomaly", frozen=True, kw_only=True):
    """A departure of one entity's metric from its own baseline, found by a detector.

    Its identity is (entity, metric, detector, first_seen): a detector that sees the same
    data again (a replay after a crash) produces the same anomaly, and the store keeps one.
    """

    schema_version: Version = SCHEMA_VERSION
    cluster: Name
    entity_kind: Literal["gpu", "rank"]
    #: ``node/gpu`` for a GPU, ``job/rank`` for a rank.
    entity: Name
    node: str | None = None
    gpu_index: NonNegInt | None = None
    job_id: str | None = None
    rank: NonNegInt | None = None
    metric: Name
    pattern: Literal["spike", "level_shift", "drift"]
    #: Event time of the first anomalous point, and of the point that confirmed it.
    first_seen: EpochSeconds
    ts: EpochSeconds
    value: float
    baseline: float
    scale: float
    #: Deviation score (robust z-score of ``value`` against the baseline).
    score: float
    #: Points the baseline was learnt from.
    window: NonNegInt
    detector: Name
    detector_version: str


class Alert(_Base, tag="alert", frozen=True, kw_only=True):
    """A page-worthy state change of one alert, with the evidence that justifies it."""

    schema_version: Version = SCHEMA_VERSION
    alert_id: Name
    #: Stable identity of the alert across its lifecycle (the dedup key for receivers).
    fingerprint: Name
    status: Literal["firing", "resolved"]
    severity: Literal["page", "ticket", "info"]
    check: Name
    summary: str
    cluster: Name
    ts: EpochSeconds
    starts_at: EpochSeconds
    ends_at: EpochSeconds | None = None
    job_id: str | None = None
    node: str | None = None
    rank: NonNegInt | None = None
    gpu_index: NonNegInt | None = None
    evidence: dict[str, float | str | None] = {}
    labels: dict[str, str] = {}
    runbook_url: str | None = None
    dashboard_url: str | None = None


class CheckpointEvent(_Base, tag="checkpoint", frozen=True, kw_only=True):
    """A rank saved or loaded its shard of a checkpoint, with the shard's digest.

    Travels on the steps topic, keyed by job. A shard whose digest at load differs from
    its digest at save was modified in between.
    """

    schema_version: Version = SCHEMA_VERSION
    cluster: StrictName
    job_id: StrictName
    node: StrictName
    rank: UInt32
    step: NonNegInt
    ts: EpochSeconds
    action: Literal["save", "load"]
    #: The checkpoint's identity (a path or a run-unique name), the same at save and load.
    checkpoint_id: Name
    #: Hex digest (e.g. SHA-256) of this rank's shard as written or as read.
    digest: HexDigest
    #: The shard's file, when it is one file: the node agent's witness hashes it too
    #: (SHA-256 of the bytes) and a save whose digest differs is ``witness_mismatch``.
    path: FilePath | None = None


class WitnessReport(_Base, tag="witness", frozen=True, kw_only=True):
    """What the node agent hashed itself, beside what the trainers report.

    ``checkpoint``: one file in a checkpoint directory, hashed (SHA-256 of its bytes) once
    it was closed after writing. ``code`` / ``framework``: a Merkle digest over the
    ``(relative path, SHA-256)`` pairs of a code tree (the job's code, an installed
    framework's source), with the files that changed since the agent's previous pass.
    Travels on the steps topic, keyed by the node's job while it runs one.
    """

    schema_version: Version = SCHEMA_VERSION
    cluster: StrictName
    node: StrictName
    #: When the hash was taken.
    ts: EpochSeconds
    subject: Literal["checkpoint", "code", "framework"]
    #: The file or tree root, absolute, as configured on the agent.
    path: FilePath
    #: SHA-256 hex; ``None`` when the file was not hashed (``skipped`` says why).
    digest: HexDigest | None = None
    #: Bytes hashed (a tree: the sum over its files).
    size: NonNegInt = 0
    #: When the file last changed: the later of its modification and status-change times
    #: (a user can set the first back, not the second).
    changed_at: EpochSeconds | None = None
    #: A tree's file count.
    files: NonNegInt | None = None
    #: Tree files added, removed or modified since the previous pass (relative paths, the
    #: first ``MAX_CHANGED_FILES``), and how many there were in all.
    changed_files: Annotated[list[FilePath], Meta(max_length=MAX_CHANGED_FILES)] = []
    changed_count: NonNegInt = 0
    #: Why the file was not hashed (``too_large``).
    skipped: Annotated[str, Meta(max_length=64)] | None = None
    #: The job the node's GPUs ran when the hash was taken, where the agent knows it.
    job_id: StrictName | None = None


class Finding(_Base, tag="finding", frozen=True, kw_only=True):
    """A cross-rank or cross-node consistency check that failed, naming whom it blames.

    Its identity is ``finding_id`` (stable for the same check, job, culprits and first
    step), so a replay produces the same finding and the store keeps one.
    """

    schema_version: Version = SCHEMA_VERSION
    finding_id: Name
    cluster: Name
    job_id: str | None = None
    #: One of :data:`CheckName` when written by this version.
    check: Name
    #: ``integrity``: the run's math or artefacts differ where they must agree (possible
    #: sabotage); ``availability``: ranks missing, stalled or slow; ``hardware``: a device
    #: fault explains it; ``info``: worth recording, not worth a page.
    category: Literal["integrity", "availability", "hardware", "info"]
    first_seen: EpochSeconds
    #: Event time the check decided (failed) first; a repeat of a persisting fault keeps it.
    ts: EpochSeconds
    step: NonNegInt | None = None
    #: Event time of the latest evaluation that still failed (a repeat moves it on).
    last_seen: EpochSeconds | None = None
    #: Set on the notice that the fault cleared (its culprits passed ``clear_steps``
    #: evaluations in a row): the same ``finding_id``, emitted once, at this event time.
    cleared_at: EpochSeconds | None = None
    #: The blamed ranks and nodes (empty when the whole job is affected).
    ranks: list[UInt32] = []
    nodes: list[str] = []
    gpu_index: UInt8 | None = None
    #: What the blamed ranks showed against what their peers agreed on.
    observed: float | str | None = None
    expected: float | str | None = None
    score: float = 0.0
    summary: str
    evidence: dict[str, float | str | None] = {}
    check_version: str


#: Any record that can appear on a trainguard topic.
Record = (
    GpuSampleBatch | StepBatch | StepRecord | CheckpointEvent | Heartbeat | Anomaly | Finding
    | Alert | WitnessReport
)
