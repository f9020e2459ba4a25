"""The agent as an independent witness: it hashes what the trainers report about.

Trainers report their checkpoints' digests and code fingerprints themselves, and an
insider who controls the training code can report values that pass. The agent is a
separate daemon the trainers cannot alter, so it looks for itself:

* every file closed after writing in the configured checkpoint directories is hashed
  (SHA-256 of its bytes, the digest the trainer kit reports) and reported as a
  ``checkpoint`` :class:`~trainguard.schemas.records.WitnessReport`;
* the configured code trees (the jobs' code, installed frameworks' sources) are
  fingerprinted at start, when the node's job changes and every ``code_interval_s``; a
  ``code`` / ``framework`` report goes out at start, at each new job and whenever the
  digest changed, naming the files that changed.

The worker compares them with the trainers' reports (``witness_mismatch``). Hashing runs
on the witness's own thread within a MB/s budget, so a 100 GB checkpoint never delays a
tick; :meth:`Witness.drain` hands the reports to the agent loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from trainguard.agents.collectors.closed_files import ClosedFiles
from trainguard.agents.collectors.code_tree import CodeTree
from trainguard.agents.collectors.file_hash import Hasher
from trainguard.agents.config import WitnessSettings
from trainguard.agents.ratelimit import LogLimiter
from trainguard.schemas.records import MAX_CHANGED_FILES, WitnessReport

__all__ = ["Witness"]

log = logging.getLogger(__name__)

Subject = Literal["code", "framework"]


class Witness:
    """Hashes closed checkpoint files and fingerprints code trees, on its own thread."""

    def __init__(self, settings: WitnessSettings, *, cluster: str, node: str,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._cluster, self._node = cluster, node
        self._clock, self._monotonic = clock, monotonic
        self._stop = threading.Event()
        self.hasher = Hasher(mb_per_s=settings.mb_per_s, max_file_bytes=settings.max_file_bytes,
                             wait=self._stop.wait)
        self.files = ClosedFiles(settings.checkpoint_dirs, use_inotify=settings.inotify,
                                 scan_interval_s=settings.scan_interval_s,
                                 exclude=settings.exclude, max_files=settings.max_files,
                                 wait=self._stop.wait, clock=monotonic)
        self.trees: list[tuple[Subject, CodeTree]] = [
            *(("code", CodeTree(p, self.hasher, exclude=settings.exclude,
                                max_files=settings.max_files)) for p in settings.code_paths),
            *(("framework", CodeTree(p, self.hasher, exclude=settings.exclude,
                                     max_files=settings.max_files))
              for p in settings.framework_paths),
        ]
        #: The node's job, set by the agent loop every tick (``None``: none known).
        self.job: str | None = None
        self._code_job: str | None = None
        self._next_code = -float("inf")
        self._last_digest: dict[str, str | None] = {}
        self._pending: deque[WitnessReport] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._limiter = LogLimiter()
        self._skip_limiter = LogLimiter()
        #: Reports dropped (oldest first) because ``max_pending`` waited for the agent.
        self.dropped = 0
        self.errors = 0

    @property
    def hashed(self) -> int:
        """Files hashed since start (checkpoint files and code files)."""
        return self.hasher.hashed

    @property
    def skipped(self) -> int:
        """Files not hashed (every reason) or left out, and reports dropped, since start."""
        return self.hasher.skipped_total + self.files.untracked + self.dropped

    def start(self) -> None:
        """Take the checkpoint directories' baseline and start the witness thread."""
        self.files.start()
        self._thread = threading.Thread(target=self._run, name="trainguard-witness",
                                        daemon=True)
        self._thread.start()
        log.info("witness started node=%s mode=%s checkpoint_dirs=%d code_trees=%d mb_per_s=%s",
                 self._node, self.files.mode, len(self.settings.checkpoint_dirs),
                 len(self.trees), self.settings.mb_per_s)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a file being hashed is abandoned) and release inotify."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.files.stop()

    def poll(self, job: str | None) -> list[WitnessReport]:
        """Learn the node's job (the agent loop's tick) and take the reports made since."""
        self.job = job
        return self.drain()

    def drain(self) -> list[WitnessReport]:
        """The reports made since the previous call."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def cycle(self, timeout_s: float) -> None:
        """One round: the code trees when due, then the checkpoint files that are ready."""
        job = self.job
        now = self._monotonic()
        if self.trees and (now >= self._next_code or job != self._code_job):
            announce = job != self._code_job
            self._code_job, self._next_code = job, now + self.settings.code_interval_s
            for subject, tree in self.trees:
                self._fingerprint(subject, tree, job, announce=announce)
        for path in self.files.ready(timeout_s):
            got = self.hasher.hash_file(path)
            if got is None or got.skipped is not None:
                self._skipped(path)
            if got is None or self._stop.is_set():
                continue
            self.files.hashed(path, got.ident)
            self._report(WitnessReport(
                cluster=self._cluster, node=self._node, ts=self._clock(), subject="checkpoint",
                path=str(path), digest=got.digest, size=got.size,
                changed_at=max(0.0, got.changed_at), skipped=got.skipped, job_id=self.job))

    def _skipped(self, path: object) -> None:
        if self._skip_limiter.allow() is not None:
            log.warning("witness could not hash a file node=%s path=%s skipped_by_reason=%s "
                        "untracked=%d", self._node, path, dict(self.hasher.skipped),
                        self.files.untracked)

    def _fingerprint(self, subject: Subject, tree: CodeTree, job: str | None, *,
                     announce: bool) -> None:
        fp = tree.fingerprint()
        root = str(tree.root)
        first = root not in self._last_digest
        if not (announce or first or fp.digest != self._last_digest[root]):
            return
        self._last_digest[root] = fp.digest
        if fp.changed:
            log.warning("witness: %s tree changed node=%s root=%s job=%s files=%d first=%s",
                        subject, self._node, root, job, len(fp.changed), fp.changed[0])
        self._report(WitnessReport(
            cluster=self._cluster, node=self._node, ts=self._clock(), subject=subject,
            path=root, digest=fp.digest, size=fp.size, files=fp.files,
            changed_files=list(fp.changed[:MAX_CHANGED_FILES]), changed_count=len(fp.changed),
            skipped="missing" if fp.digest is None else None, job_id=job))

    def _report(self, report: WitnessReport) -> None:
        with self._lock:
            if len(self._pending) >= self.settings.max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(report)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle(0.5)
            except Exception as exc:  # a bug or a hostile tree must not end the witness
                self.errors += 1
                held = self._limiter.allow()
                if held is not None:
                    log.error("witness cycle failed node=%s errors=%d (%d more since last "
                              "logged): %r", self._node, self.errors, held, exc)
                self._stop.wait(1.0)
