"""Rank lifecycle events and code manifests waiting for the agent's next tick.

Two producers fill :class:`RankReports`, one per job:

* the step intake, with what the trainer kit sends on the step socket
  (:class:`~trainguard.agents.reporter.TrainerEvent`: ``bye`` / ``waiting``;
  :class:`~trainguard.agents.reporter.ManifestReport`: the files behind the rank's
  ``env_fingerprint``), admitted like steps (only the process bound to the (job, rank)
  speaks for it) and stamped with the pid the kernel reports, never the trainer's word;
* the rank watch (:mod:`.rank_watch`), with what ``/proc`` shows of the bound processes
  (``exited`` / ``stopped`` / ``resumed``).

The agent's tick drains them (:meth:`RankReports.drain`) into the job's step batches.
Both queues are bounded; what does not fit is dropped, counted and logged (rate-limited).
A manifest whose fingerprint is already waiting for the same job is not queued twice: the
worker keeps one manifest per fingerprint, and a node's ranks usually share one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Final

from trainguard.agents.claims import Peer
from trainguard.agents.ratelimit import LogLimiter
from trainguard.agents.reporter import ManifestReport, TrainerEvent
from trainguard.schemas.codec import RecordError
from trainguard.schemas.ranks import MAX_MANIFEST_ENTRIES, EnvManifest, RankEvent

__all__ = [
    "MAX_MANIFEST_DIGEST_CHARS",
    "MAX_MANIFEST_NAME_CHARS",
    "JobRankReports",
    "RankReports",
    "env_manifest",
    "trainer_event",
]

_log = logging.getLogger(__name__)

#: Bounds of one manifest entry (the wire's ``EnvManifest``): a name and a digest.
MAX_MANIFEST_NAME_CHARS: Final = 512
MAX_MANIFEST_DIGEST_CHARS: Final = 128
# How much of a bad name an error message quotes.
_QUOTE: Final = 80


def trainer_event(report: TrainerEvent, peer: Peer) -> RankEvent:
    """The kit's ``bye`` / ``waiting`` / ``busy`` as a :class:`RankEvent` with the kernel's pid."""
    return RankEvent(
        rank=report.rank, ts=report.ts, event=report.event,
        # pid 0: a sender in a pid namespace the agent cannot see; no pid is better than 0.
        pid=peer.pid if peer.pid > 0 else None,
        reason=report.reason, step=report.step, since=report.since,
        collective=report.collective, phase=report.phase,
    )


def env_manifest(report: ManifestReport) -> EnvManifest:
    """The kit's manifest as an :class:`EnvManifest`; :class:`RecordError` if out of bounds."""
    entries = report.entries
    if len(entries) > MAX_MANIFEST_ENTRIES:
        raise RecordError("invalid", f"manifest of job {report.job_id!r} rank {report.rank} "
                                     f"has {len(entries)} entries; at most "
                                     f"{MAX_MANIFEST_ENTRIES}")
    for name, digest in entries.items():
        if not 1 <= len(name) <= MAX_MANIFEST_NAME_CHARS:
            raise RecordError("invalid", f"manifest entry name {name[:_QUOTE]!r} has "
                                         f"{len(name)} characters; expected 1 to "
                                         f"{MAX_MANIFEST_NAME_CHARS}")
        if not 1 <= len(digest) <= MAX_MANIFEST_DIGEST_CHARS:
            raise RecordError("invalid", f"manifest entry {name[:_QUOTE]!r} has a digest of "
                                         f"{len(digest)} characters; expected 1 to "
                                         f"{MAX_MANIFEST_DIGEST_CHARS}")
    return EnvManifest(rank=report.rank, ts=report.ts, fingerprint=report.fingerprint,
                       entries=entries)


@dataclass(slots=True)
class JobRankReports:
    """One job's events and manifests, oldest first."""

    events: list[RankEvent] = field(default_factory=list)
    manifests: list[EnvManifest] = field(default_factory=list)


class RankReports:
    """Bounded, per-job queue of rank events and manifests (thread-safe).

    At most ``max_events`` events and ``max_manifests`` manifests wait over all jobs; the
    newest beyond that are dropped and counted (``events_dropped``, ``manifests_dropped``).
    """

    def __init__(self, *, max_events: int = 10_000, max_manifests: int = 256,
                 warn_interval_s: float = 10.0) -> None:
        if max_events < 1 or max_manifests < 1:
            raise ValueError(f"max_events {max_events}, max_manifests {max_manifests}: "
                             "expected >= 1")
        self._max_events, self._max_manifests = max_events, max_manifests
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRankReports] = {}
        self._events = 0
        self._manifests = 0
        # (job, fingerprint) of the manifests waiting, so each is queued once.
        self._fingerprints: set[tuple[str, str]] = set()
        self._limiter = LogLimiter(warn_interval_s)
        self.events_received = 0
        self.events_dropped = 0
        self.manifests_received = 0
        #: Manifests not queued because the same job's same fingerprint was waiting.
        self.manifests_duplicate = 0
        self.manifests_dropped = 0

    def add_event(self, job: str, event: RankEvent) -> bool:
        """Queue ``event`` for ``job``; False if the queue is full (counted)."""
        with self._lock:
            self.events_received += 1
            if self._events >= self._max_events:
                self.events_dropped += 1
                dropped = True
            else:
                self._jobs.setdefault(job, JobRankReports()).events.append(event)
                self._events += 1
                dropped = False
        if dropped:
            self._warn("event", job, event.rank, self.events_dropped)
        return not dropped

    def add_manifest(self, job: str, manifest: EnvManifest) -> bool:
        """Queue ``manifest`` for ``job`` unless its fingerprint waits already or it is full."""
        key = (job, manifest.fingerprint)
        with self._lock:
            self.manifests_received += 1
            if key in self._fingerprints:
                self.manifests_duplicate += 1
                return True
            if self._manifests >= self._max_manifests:
                self.manifests_dropped += 1
                dropped = True
            else:
                self._jobs.setdefault(job, JobRankReports()).manifests.append(manifest)
                self._fingerprints.add(key)
                self._manifests += 1
                dropped = False
        if dropped:
            self._warn("manifest", job, manifest.rank, self.manifests_dropped)
        return not dropped

    def drain(self) -> dict[str, JobRankReports]:
        """Take everything queued since the last call, per job."""
        with self._lock:
            out, self._jobs = self._jobs, {}
            self._events = self._manifests = 0
            self._fingerprints.clear()
        return out

    def counts(self) -> dict[str, int]:
        """A consistent snapshot of the counters."""
        with self._lock:
            return {
                "events_received": self.events_received,
                "events_dropped": self.events_dropped,
                "manifests_received": self.manifests_received,
                "manifests_duplicate": self.manifests_duplicate,
                "manifests_dropped": self.manifests_dropped,
            }

    def _warn(self, what: str, job: str, rank: int, total: int) -> None:
        held = self._limiter.allow()
        if held is not None:
            _log.warning("rank %s dropped: queue full job=%s rank=%d dropped_total=%d "
                         "(%d more since last warning)", what, job, rank, total, held)
