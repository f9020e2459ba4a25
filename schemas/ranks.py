"""What a job's rank processes did besides stepping: lifecycle events and code manifests.

Both travel inside a :class:`~trainguard.schemas.records.StepBatch` (keyed by job, so they
meet the job's steps in one partition):

* :class:`RankEvent`: a rank's process exited, stopped (``SIGSTOP``, a debugger) or
  resumed, as its node agent saw it in ``/proc`` (an independent witness: no trainer code
  is trusted for it); or, from the trainer kit, ``bye`` (the process ends its reporting on
  purpose, and why), ``waiting`` (it has waited inside a collective since ``since``) and
  ``busy`` (it is in a long phase of its own since ``since``: a checkpoint save or load,
  an evaluation only it runs; its peers may wait for it in the next collective meanwhile).
  In a real job a dead or hung rank stops its peers inside the next collective, so no
  peer keeps stepping: these events are how the worker names the rank that never arrived.
* :class:`EnvManifest`: the files and versions behind a rank's ``env_fingerprint`` (the
  fingerprint is the digest of the manifest), sent when it changes, so that a
  ``code_fingerprint`` finding names the files that differ.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from trainguard.schemas.types import EpochSeconds, Hash, NonNegInt, UInt8, UInt32

__all__ = [
    "MAX_EVENTS_PER_BATCH",
    "MAX_MANIFEST_ENTRIES",
    "MAX_MANIFESTS_PER_BATCH",
    "BusyPhase",
    "ByeReason",
    "EnvManifest",
    "RankEvent",
    "RankEventKind",
]

#: Rank events one step batch carries at most.
MAX_EVENTS_PER_BATCH: Final = 1024
#: Manifests one step batch carries at most (a node's ranks usually share one).
MAX_MANIFESTS_PER_BATCH: Final = 16
#: Files plus versions one manifest lists at most (the training script, the job's own
#: modules and the framework modules the job imported fit well below it).
MAX_MANIFEST_ENTRIES: Final = 8192

#: ``exited`` / ``stopped`` / ``resumed``: the node agent's view of the bound process.
#: ``bye`` / ``waiting`` / ``busy``: what the trainer kit says (the agent stamps the
#: kernel's pid).
RankEventKind = Literal["exited", "stopped", "resumed", "bye", "waiting", "busy"]
#: What a ``busy`` rank is doing.
BusyPhase = Literal["checkpoint", "eval", "other"]
#: Why a process said ``bye``: it finished its run; it is exiting on an exception;
#: it was asked to stop (``SIGTERM`` from its launcher, an elastic restart).
ByeReason = Literal["finished", "error", "terminated"]

ManifestPath = Annotated[str, Meta(min_length=1, max_length=512)]
ManifestDigest = Annotated[str, Meta(min_length=1, max_length=128)]


class RankEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One thing that happened to one rank's process."""

    rank: UInt32
    #: When it happened (an ``exited`` seen by polling: when the agent noticed).
    ts: EpochSeconds
    event: RankEventKind
    #: The process, from the kernel (``SCM_CREDENTIALS`` or the agent's rank binding).
    pid: UInt32 | None = None
    #: ``exited``: the exit status when the agent could read it (a zombie's
    #: ``/proc/<pid>/stat``), else both ``None`` (the launcher reaped it first).
    exit_code: UInt8 | None = None
    signal: UInt8 | None = None
    #: ``bye``: why.
    reason: ByeReason | None = None
    #: ``bye`` / ``waiting``: the last step the rank reported (or is in).
    step: NonNegInt | None = None
    #: ``waiting``: since when the rank has been inside the collective, and that
    #: collective's sequence number in the rank's run (peers agree on it). ``busy``: since
    #: when the rank has been in ``phase``.
    since: EpochSeconds | None = None
    collective: NonNegInt | None = None
    phase: BusyPhase | None = None


class EnvManifest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The inputs behind one rank's ``env_fingerprint``."""

    rank: UInt32
    ts: EpochSeconds
    #: The ``env_fingerprint`` this manifest hashes to (what the rank's steps carry).
    fingerprint: Hash
    #: ``{name: digest}``: files as ``"<root>:<relative path>"`` (``script``, ``job``,
    #: ``torch``, ...) with a digest of their bytes, and library versions as
    #: ``"version:<package>"`` with the version string.
    entries: Annotated[dict[ManifestPath, ManifestDigest], Meta(max_length=MAX_MANIFEST_ENTRIES)]
