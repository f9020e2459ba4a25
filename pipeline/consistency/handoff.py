"""Moving the consistency stage's jobs between workers: one input partition at a time.

A job belongs to the input partition (``topic:partition``) its step-topic records come
from: agents key steps, checkpoint events and witness reports by job id, so all of a
job's step records share one partition. Its GPU sample batches and its nodes' heartbeats
are keyed by the job too, so with the raw topics partitioned alike (the same partition
count) they share that partition number and reach the same worker. A job seen only
through sample batches or heartbeats so far belongs to their partition until its first
step record names the steps partition.

:func:`export_partition` writes every job of a partition, with its nodes' silence state
and its event clock, as one blob; :func:`load_partition` installs such a blob on the
worker that takes the partition over. The blob is versioned, checksummed, compressed and
bounded (``max_state_bytes`` uncompressed): jobs are written most recently seen first
until the bound, the rest counted. A blob that is damaged, foreign, too large, or written
by code or settings of another shape (:func:`~.codec.layout_fingerprint`) raises
:class:`~.codec.StateError`; nothing of it is installed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from trainguard.pipeline.consistency.codec import StateError, decode_state, encode_state
from trainguard.pipeline.consistency.job import JobState
from trainguard.pipeline.consistency.silence import SilenceWatch

if TYPE_CHECKING:
    from trainguard.pipeline.consistency.stage import ConsistencyStage

__all__ = ["MAGIC", "VERSION", "SavedJob", "export_partition", "load_partition"]

#: What every consistency state blob starts with (other blobs are refused unread).
MAGIC = b"TGC\x01"
#: The blob format; bump on an incompatible change of the envelope.
VERSION = 1


class _Envelope(msgspec.Struct, array_like=True):
    version: int
    layout: str
    jobs: list[bytes]


@dataclass(frozen=True)
class SavedJob:
    """One job as read from a blob, checked, ready to install."""

    job: JobState
    strong: bool
    silence: dict[str, Any]
    clock: float | None


def export_partition(stage: ConsistencyStage, job_ids: Sequence[str], layout: str
                     ) -> tuple[bytes, int]:
    """The blob of ``job_ids`` (most recently seen last) and how many did not fit."""
    raw, left_out = encode_partition(stage, job_ids, layout)
    return seal_partition(raw), left_out


def encode_partition(stage: ConsistencyStage, job_ids: Sequence[str], layout: str
                     ) -> tuple[bytes, int]:
    """What :func:`seal_partition` compresses, and how many jobs did not fit.

    A job whose state cannot be written (:class:`StateError`) is counted with those that
    did not fit: it starts fresh on the next worker.
    """
    bound, config = stage.config.max_state_bytes, stage.config
    silence = stage.silence.saved_jobs(job_ids)  # one pass over the nodes, not one a job
    bodies: list[bytes] = []
    total = left_out = 0
    for job_id in reversed(job_ids):
        job = stage.jobs[job_id]
        try:
            body = encode_state([job_id, stage.owned_by_steps(job_id), job,
                                 silence[job_id], stage.clock_saved(job_id)],
                                config)
        except StateError:
            left_out += 1
            continue
        if total + len(body) > bound:
            left_out += 1
            continue
        bodies.append(body)
        total += len(body)
    return msgspec.msgpack.encode(_Envelope(VERSION, layout, bodies)), left_out


def seal_partition(raw: bytes) -> bytes:
    """The blob of an encoded partition: checksum and zlib (both release the GIL)."""
    return MAGIC + zlib.crc32(raw).to_bytes(4, "big") + zlib.compress(raw, 1)


def load_partition(blob: bytes, stage: ConsistencyStage, layout: str) -> list[SavedJob]:
    """Every job of a blob, checked; raises :class:`StateError` if any part is bad."""
    if not blob.startswith(MAGIC):
        raise StateError(f"not a consistency state blob (starts {blob[:4]!r})")
    raw = _inflate(blob[len(MAGIC) + 4:], stage.config.max_state_bytes)
    if zlib.crc32(raw).to_bytes(4, "big") != blob[len(MAGIC):len(MAGIC) + 4]:
        raise StateError("consistency state blob fails its checksum")
    try:
        env = msgspec.msgpack.decode(raw, type=_Envelope)
    except msgspec.DecodeError as exc:
        raise StateError(f"consistency state envelope unreadable: {exc}") from exc
    if env.version != VERSION:
        raise StateError(f"consistency state version {env.version}; expected {VERSION}")
    if env.layout != layout:
        raise StateError(f"consistency state layout {env.layout} is not this worker's "
                         f"{layout} (other code or settings)")
    return [_checked(decode_state(body, stage.config)) for body in env.jobs]


def _inflate(data: bytes, bound: int) -> bytes:
    """Decompress at most a little over ``bound`` bytes: a small blob may not explode."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, bound + 65536)
    except zlib.error as exc:
        raise StateError(f"consistency state blob does not decompress: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise StateError(f"consistency state blob is over {bound} bytes or truncated")
    return raw


def _checked(item: Any) -> SavedJob:
    """The shape of one job's entry, checked before anything of it is installed."""
    if not (isinstance(item, list) and len(item) == 5):
        raise StateError("consistency state entry is not a 5-item list")
    job_id, strong, job, silence, clock = item
    if not (isinstance(job, JobState) and isinstance(job_id, str) and job.job_id == job_id):
        raise StateError(f"consistency state entry for job {job_id!r} holds no such job")
    if not SilenceWatch.valid_saved(silence):
        raise StateError(f"silence state of job {job_id!r} is malformed")
    if clock is not None and not isinstance(clock, float):
        raise StateError(f"event clock of job {job_id!r} is malformed")
    return SavedJob(job, bool(strong), silence, clock)
