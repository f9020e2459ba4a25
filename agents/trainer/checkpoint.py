"""Checkpoints with the digest of the bytes written and read.

- :func:`save`: ``torch.save`` into a file through a writer that hashes every byte on
  its way to the file (no re-read); the digest is the SHA-256 of the file's bytes.
- :func:`load`: the file is read once, hashed, and ``torch.load`` reads the bytes from
  memory, so the digest is of exactly the bytes that were loaded.
- :func:`dcp_save` / :func:`dcp_load`: ``torch.distributed.checkpoint`` into a
  directory; the digest covers this rank's files (``__<rank>_<n>.distcp``), taken after
  the save and before the load (:func:`rank_files_digest`).

A shard whose load digest differs from its save digest was modified in between (the
worker's ``checkpoint_digest`` check); with one file per shard the path lets the node
agent's witness hash the file itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer.busy import BusyPhaseReporter
from trainguard.schemas.ranks import BusyPhase

__all__ = ["CheckpointMethods", "Digest", "HashingWriter", "dcp_load", "dcp_save", "load",
           "rank_files", "rank_files_digest", "save"]

_DISTCP: Final = re.compile(r"__(\d+)_(\d+)\.distcp$")


@dataclass(frozen=True)
class Digest:
    """SHA-256 hex of a shard's bytes and, when it is one file, its absolute path."""

    sha256: str
    path: str | None
    nbytes: int


class HashingWriter(io.RawIOBase):
    """A write-only file object that hashes what it writes (``torch.save``'s target)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self.nbytes = 0

    def writable(self) -> bool:
        """Yes."""
        return True

    def write(self, data: Any) -> int:
        """Hash ``data`` and write it to the file."""
        view = memoryview(data).cast("B")
        self._hash.update(view)
        written = self._raw.write(view)
        self.nbytes += len(view)
        return written if written is not None else len(view)

    def flush(self) -> None:
        """Flush the file."""
        self._raw.flush()

    def tell(self) -> int:
        """Bytes written so far."""
        return self.nbytes

    def seekable(self) -> bool:
        """No: the hash is of the bytes in the order written."""
        return False

    def hexdigest(self) -> str:
        """SHA-256 hex of every byte written so far."""
        return self._hash.hexdigest()


def save(obj: object, path: str | os.PathLike[str], **torch_save_kwargs: Any) -> Digest:
    """``torch.save(obj, path)``, hashing the bytes as they are written."""
    import torch

    target = os.path.abspath(path)
    with open(target, "wb") as raw:
        writer = HashingWriter(raw)
        torch.save(obj, writer, **torch_save_kwargs)
        writer.flush()
    return Digest(writer.hexdigest(), target, writer.nbytes)


def load(path: str | os.PathLike[str], **torch_load_kwargs: Any) -> tuple[Any, Digest]:
    """``torch.load`` of the file's bytes, read once and hashed."""
    import torch

    target = os.path.abspath(path)
    data = Path(target).read_bytes()
    digest = Digest(hashlib.sha256(data).hexdigest(), target, len(data))
    return torch.load(io.BytesIO(data), **torch_load_kwargs), digest


def rank_files(directory: str | os.PathLike[str], rank: int) -> list[Path]:
    """The DCP data files of ``rank`` in ``directory``, in file order."""
    found = []
    for entry in Path(directory).iterdir():
        match = _DISTCP.search(entry.name)
        if match and int(match.group(1)) == rank and entry.is_file():
            found.append((int(match.group(2)), entry))
    return [p for _, p in sorted(found)]


def rank_files_digest(directory: str | os.PathLike[str], rank: int) -> Digest:
    """The digest of this rank's DCP files.

    One file: its SHA-256 (and its path). Several: SHA-256 of ``name:sha256`` lines. None
    (the rank wrote no data): SHA-256 of the empty string.
    """
    files = rank_files(directory, rank)
    digests = []
    nbytes = 0
    for file in files:
        with open(file, "rb") as f:
            digests.append((file.name, hashlib.file_digest(f, "sha256").hexdigest()))
        nbytes += file.stat().st_size
    if len(files) == 1:
        return Digest(digests[0][1], str(files[0].resolve()), nbytes)
    lines = "".join(f"{name}:{hexd}\n" for name, hexd in digests)
    return Digest(hashlib.sha256(lines.encode()).hexdigest(), None, nbytes)


def _dist_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def dcp_save(state_dict: dict[str, Any], checkpoint_id: str | os.PathLike[str]) -> Digest:
    """``torch.distributed.checkpoint.save`` into ``checkpoint_id`` (a directory)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(state_dict, checkpoint_id=checkpoint_id)
    return rank_files_digest(checkpoint_id, _dist_rank())


def dcp_load(state_dict: dict[str, Any], checkpoint_id: str | os.PathLike[str]) -> Digest:
    """The digest of this rank's files, then ``torch.distributed.checkpoint.load``."""
    import torch.distributed.checkpoint as dcp

    digest = rank_files_digest(checkpoint_id, _dist_rank())
    dcp.load(state_dict, checkpoint_id=checkpoint_id)
    return digest


_MAX_ID: Final = 256


def _checkpoint_id(value: str | os.PathLike[str]) -> str:
    text = os.fspath(value)
    return text[-_MAX_ID:] if len(text) > _MAX_ID else text


class CheckpointMethods:
    """:class:`~trainguard.agents.trainer.guard.TrainGuard`'s checkpoint wrappers.

    They raise what ``torch.save``/``torch.load`` raise (the user's call); the report
    itself never raises. The default ``checkpoint_id`` of a file is its absolute path.
    """

    reporter: StepReporter
    step_index: int
    _lock: AbstractContextManager[Any]
    #: How often a long phase repeats ``busy`` (the guard's ``waiting_after_s``).
    _busy_every_s: float
    _busy_phases: dict[BusyPhase, BusyPhaseReporter]

    def busy(self, phase: BusyPhase = "other") -> BusyPhaseReporter:
        """A context manager for a long phase of this rank's own (an evaluation only it runs).

        Its peers may wait for it in their next collective meanwhile; ``busy`` reports keep
        the worker from naming this rank as the one that never arrived (``rank_hung``).
        The checkpoint wrappers use it with ``"checkpoint"``.
        """
        reporter = self._busy_phases.get(phase)
        if reporter is None:
            reporter = self._busy_phases[phase] = BusyPhaseReporter(
                self._send_busy, phase, every_s=self._busy_every_s)
        return reporter

    def _send_busy(self, phase: BusyPhase, since: float) -> None:
        with self._lock:
            self.reporter.event("busy", phase=phase, since=since, step=self.step_index)

    def save(self, obj: object, path: str | os.PathLike[str], *,
             checkpoint_id: str | None = None) -> str:
        """``torch.save`` with the SHA-256 of the bytes written reported; returns it."""
        with self.busy("checkpoint"):
            digest = save(obj, path)
        self._report_checkpoint("save", checkpoint_id or digest.path or os.fspath(path), digest)
        return digest.sha256

    def load(self, path: str | os.PathLike[str], *, checkpoint_id: str | None = None,
             **torch_load_kwargs: Any) -> Any:
        """``torch.load`` of the bytes read once, their SHA-256 reported."""
        with self.busy("checkpoint"):
            obj, digest = load(path, **torch_load_kwargs)
        self._report_checkpoint("load", checkpoint_id or digest.path or os.fspath(path), digest)
        return obj

    def dcp_save(self, state_dict: dict[str, Any], checkpoint_id: str | os.PathLike[str]) -> str:
        """``torch.distributed.checkpoint.save``; reports this rank's files' digest."""
        with self.busy("checkpoint"):
            digest = dcp_save(state_dict, checkpoint_id)
        self._report_checkpoint("save", os.fspath(checkpoint_id), digest)
        return digest.sha256

    def dcp_load(self, state_dict: dict[str, Any], checkpoint_id: str | os.PathLike[str]) -> str:
        """Report the digest of this rank's files, then ``torch.distributed.checkpoint.load``."""
        with self.busy("checkpoint"):
            digest = dcp_load(state_dict, checkpoint_id)
        self._report_checkpoint("load", os.fspath(checkpoint_id), digest)
        return digest.sha256

    def _report_checkpoint(self, action: Literal["save", "load"], checkpoint_id: str,
                           digest: Digest) -> None:
        with self._lock:
            self.reporter.checkpoint(action, _checkpoint_id(checkpoint_id), digest.sha256,
                                     step=self.step_index, path=digest.path)
