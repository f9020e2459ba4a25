"""The agent's end of the step socket: receives trainers' step datagrams and queues them.

A daemon thread reads the Unix datagram socket that :class:`trainguard.agents.reporter.StepReporter`
writes to, validates each datagram strictly and appends the step records to a bounded
queue; the agent's tick calls :meth:`StepIntake.drain`. Bad input is counted by reason
(``trainguard.schemas.codec`` reasons, ``error`` for anything else a datagram makes
fail) and never stops or slows the thread: only a failing socket read backs off.

Everything a sender controls is bounded: a reporter's drop count above
``max_reported_drops`` makes its datagram malformed, the per-reporter drop memory keeps
at most ``max_reporters`` entries (the least recently heard is forgotten, counted in
``reporters_evicted``), and the node's total saturates below the wire's int64 bound, so
one forged datagram cannot get the node's heartbeats rejected.

The thread empties the socket every ``poll_interval_s`` (5 ms) and sleeps in between
rather than blocking in ``recv``: a sender's ``send`` then never has to wake a sleeping
reader, which costs the trainer ~15-20 µs per step on a VM instead of ~3 µs.

Who speaks: the socket file is ``mode`` (``0660`` by default) and, with ``group``, owned
by that group (trainers' users join it). Each datagram is read with the kernel's
credentials of its sender (``SCM_CREDENTIALS``): the agent stamps the sender's real pid
and uid on the step records it forwards, overriding what the trainer wrote, and each
(job, rank) belongs to the first live process claiming it (:mod:`.claims`); another
process's reports for it are refused (``claims_refused``) and reported once per
claimant (``claim_conflicts``, :meth:`StepIntake.drain_claims`).

Besides steps and checkpoint reports, the trainer kit sends lifecycle events (``bye``,
``waiting``) and the manifest behind its ``env_fingerprint``: admitted the same way, stamped
with the kernel's pid and queued per job in :attr:`StepIntake.rank_reports`
(:mod:`.rank_events`), which the rank watch (:mod:`.rank_watch`) fills too.

Kernel limit worth knowing: on Linux a Unix datagram socket queues at most
``net.unix.max_dgram_qlen`` + 1 datagrams, whatever ``SO_RCVBUF`` says (10 is the kernel
default and what containers get; systemd hosts set 512). Beyond that, trainers' reports
are dropped on their side (counted, and reported to us as ``datagrams_dropped``). With
ranks that step in lock-step, a node with more than ~10 ranks needs it raised, e.g.
``sysctl -w net.unix.max_dgram_qlen=1024``.
"""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

import msgspec

from trainguard.agents.claims import CREDENTIALS_SPACE, Peer, RankBindings, peer_credentials
from trainguard.agents.rank_events import RankReports, env_manifest, trainer_event
from trainguard.agents.ratelimit import LogLimiter
from trainguard.agents.reporter import (
    DATAGRAM_VERSION,
    MAX_REPORTED_DROPS,
    CheckpointReport,
    StepDatagram,
)
from trainguard.errors import CollectorError
from trainguard.schemas.codec import RecordDecoder, RecordError
from trainguard.schemas.records import SCHEMA_VERSION, STEP_FLOAT_FIELDS, RankClaim, StepRecord

__all__ = ["MAX_DATAGRAM_BYTES", "StepIntake", "kernel_dgram_qlen"]

_log = logging.getLogger(__name__)

#: Larger datagrams are rejected as ``too_large``. A step record is a few hundred bytes; a
#: manifest of a job's framework files can be a hundred kilobytes, and a sender's default
#: socket buffer (``net.core.wmem_default``, 208 KiB) caps any datagram just above this.
MAX_DATAGRAM_BYTES: Final = 192 * 1024
# Datagrams read per wake-up before checking for stop again.
_BURST: Final = 4096
# Below this kernel queue length, synchronous bursts of many ranks overflow it.
_SMALL_QLEN: Final = 64
# Counters stay within the wire's int64 bound (a heartbeat beyond it is rejected).
_COUNTER_MAX: Final = 2**63 - 1
_FLOAT_FIELDS: Final = frozenset(STEP_FLOAT_FIELDS)


def kernel_dgram_qlen(path: Path = Path("/proc/sys/net/unix/max_dgram_qlen")) -> int | None:
    """The kernel's queue length limit for Unix datagram sockets, where readable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class StepIntake:
    """Receives step datagrams on a Unix socket into a bounded queue (thread-safe).

    ``mode`` is the socket file's permission bits and ``group`` the group it is given:
    trainers running as other users need write access (``0o660`` with a group they are
    in; ``0o666`` opens it to every local user). ``rcvbuf_bytes`` sets
    ``SO_RCVBUF``, which Linux ignores for Unix datagram queues (see the module notes).
    ``steps_received`` counts valid datagrams, including the ``steps_dropped`` that
    did not fit the queue.
    """

    def __init__(
        self,
        socket_path: Path,
        *,
        max_queue: int = 100_000,
        rcvbuf_bytes: int | None = None,
        mode: int = 0o660,
        group: str | None = None,
        bindings: RankBindings | None = None,
        rank_reports: RankReports | None = None,
        poll_interval_s: float = 0.005,
        warn_interval_s: float = 10.0,
        read_error_backoff_s: float = 1.0,
        max_reporters: int = 4096,
        max_reported_drops: int = MAX_REPORTED_DROPS,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if max_queue < 1 or max_reporters < 1:
            raise ValueError(
                f"max_queue {max_queue}, max_reporters {max_reporters}: expected >= 1"
            )
        self.socket_path = Path(socket_path)
        self.max_queue = max_queue
        self._rcvbuf_bytes = rcvbuf_bytes
        self._mode = mode
        self._group = group
        #: Which process holds each (job, rank); the second live claimant is refused.
        self.bindings = bindings if bindings is not None else RankBindings(
            max_bindings=max_reporters)
        #: Trainers' ``bye`` / ``waiting`` events and manifests (and the rank watch's events).
        self.rank_reports = rank_reports if rank_reports is not None else RankReports()
        self._poll_s = poll_interval_s
        self._read_error_backoff_s = read_error_backoff_s
        self._max_reporters = max_reporters
        self._max_reported_drops = max_reported_drops
        self._limiter = LogLimiter(warn_interval_s, clock=clock)
        self._read_limiter = LogLimiter(warn_interval_s, clock=clock)
        self._stop = threading.Event()
        #: Sleeps ``s`` seconds or until stopped (True then); injectable for tests.
        self._wait: Callable[[float], bool] = wait if wait is not None else self._stop.wait
        self._decoder: RecordDecoder[StepDatagram] = RecordDecoder(StepDatagram)
        self._lock = threading.Lock()
        self._queue: deque[StepRecord] = deque()
        self._checkpoints: deque[CheckpointReport] = deque()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        # Highest drop count each sender (pid, job, rank) reported; only senders that
        # ever dropped are kept, least recently heard first, at most max_reporters.
        self._client_drops: OrderedDict[tuple[int, str, int], int] = OrderedDict()
        #: Reporters forgotten because max_reporters were tracked.
        self.reporters_evicted = 0
        #: Failed socket reads (the thread backs off after each).
        self.read_errors = 0
        self.steps_received = 0
        #: Checkpoint save/load reports received (queued with the steps' bound).
        self.checkpoints_received = 0
        self.steps_malformed = 0
        self.malformed_by_reason: dict[str, int] = {}
        self.steps_dropped = 0
        self.datagrams_dropped = 0
        self.nonfinite = 0
        self.nonfinite_by_field: dict[str, int] = {}

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start the reader thread."""
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if self._rcvbuf_bytes is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf_bytes)
            # Before bind: every datagram that can reach us carries its sender's credentials.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(str(path))
            os.chmod(path, self._mode)
            if self._group is not None:
                self._chown(path)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            path.unlink(missing_ok=True)
            raise CollectorError(f"cannot listen for steps on {path}: {exc}") from exc
        except CollectorError:
            sock.close()
            path.unlink(missing_ok=True)
            raise
        self._sock = sock
        self._inode = path.stat().st_ino
        qlen = kernel_dgram_qlen()
        _log.info(
            "step intake listening socket=%s mode=%o group=%s max_queue=%d "
            "net.unix.max_dgram_qlen=%s",
            path,
            self._mode,
            self._group,
            self.max_queue,
            qlen,
        )
        if qlen is not None and qlen < _SMALL_QLEN:
            _log.warning(
                "net.unix.max_dgram_qlen=%d: at most %d step datagrams can wait for this "
                "agent, so more ranks than that stepping together lose reports (counted as "
                "datagrams_dropped); raise it, e.g. sysctl -w net.unix.max_dgram_qlen=1024",
                qlen,
                qlen + 1,
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="step-intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader thread, close the socket and remove its file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            # Only our own socket file: another agent may have replaced it since.
            if self._inode is not None and self.socket_path.stat().st_ino == self._inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass
        self._inode = None

    def drain(self, max_items: int | None = None) -> list[StepRecord]:
        """Pop queued step records, oldest first (all of them, or at most ``max_items``)."""
        with self._lock:
            if max_items is None or max_items >= len(self._queue):
                items = list(self._queue)
                self._queue.clear()
                return items
            popleft = self._queue.popleft
            return [popleft() for _ in range(max_items)]

    def counts(self) -> dict[str, int]:
        """A consistent snapshot of the counters (for heartbeats and metrics)."""
        with self._lock:
            return {
                "steps_received": self.steps_received,
                "steps_malformed": self.steps_malformed,
                "steps_dropped": self.steps_dropped,
                "datagrams_dropped": self.datagrams_dropped,
                "nonfinite": self.nonfinite,
                "reporters_evicted": self.reporters_evicted + self.bindings.evicted,
                "claims_refused": self.bindings.refused,
                "claim_conflicts": self.bindings.conflicts,
            }

    def drain_claims(self) -> dict[str, list[RankClaim]]:
        """Claims of a rank refused since the last call (another live process holds it), per job."""
        with self._lock:
            return self.bindings.drain()

    @property
    def queued(self) -> int:
        """Records waiting for :meth:`drain`."""
        return len(self._queue)

    def __enter__(self) -> StepIntake:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _chown(self, path: Path) -> None:
        """Give the socket file to the configured group; a clear error if that cannot be."""
        try:
            gid = grp.getgrnam(self._group or "").gr_gid
        except KeyError:
            raise CollectorError(
                f"steps socket group {self._group!r} does not exist; create it (groupadd "
                f"{self._group}) and add the trainers' users, or set steps.socket_group"
            ) from None
        try:
            os.chown(path, -1, gid)
        except PermissionError as exc:
            raise CollectorError(
                f"cannot give steps socket {path} to group {self._group!r}: {exc.strerror}; "
                "the agent's user must be root or a member of the group"
            ) from None

    def _remove_stale(self, path: Path) -> None:
        """Unlink a socket left by a dead agent; refuse to steal a live one or a file."""
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise CollectorError(f"{path} exists and is not a socket; remove it or pick another")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody bound: stale
            return
        finally:
            probe.close()
        raise CollectorError(f"another process is already listening for steps on {path}")

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        # One buffer for the thread's life: msgspec copies what it keeps.
        buf = bytearray(MAX_DATAGRAM_BYTES)
        view = memoryview(buf)
        while True:
            try:
                for _ in range(_BURST):
                    try:
                        n, anc, flags, _ = sock.recvmsg_into([buf], CREDENTIALS_SPACE)
                    except BlockingIOError:
                        break
                    # Never raises: a datagram costs itself, not the thread's time.
                    self._handle_safely(view[:n], truncated=bool(flags & socket.MSG_TRUNC),
                                        peer=peer_credentials(anc))
                else:
                    if self._stop.is_set():
                        return
                    continue  # more waiting: read on before sleeping
            except Exception as exc:
                # The socket itself failed: never let the thread die (trainers would silently
                # lose their agent), and do not spin on a broken socket.
                self.read_errors += 1
                held = self._read_limiter.allow()
                if held is not None:
                    _log.error("step intake read failed socket=%s read_errors=%d (%d more since "
                               "last logged): %r", self.socket_path, self.read_errors, held, exc)
                if self._wait(self._read_error_backoff_s):
                    return
            # Sleep on the event, not on the socket: a sender then never pays for waking
            # this thread (a cross-CPU wake-up, ~15 µs per send on a VM).
            if self._wait(self._poll_s):
                return

    def _handle_safely(self, data: memoryview, *, truncated: bool, peer: Peer | None) -> None:
        """:meth:`_handle`, with any failure counted as a malformed datagram."""
        if peer is None:  # SO_PASSCRED makes the kernel attach them: never expected
            self._malformed("no_credentials", "datagram arrived without sender credentials")
            return
        try:
            self._handle(data, truncated=truncated, peer=peer)
        except RecordError as exc:
            self._malformed(exc.reason, exc.message)
        except UnicodeError as exc:  # invalid UTF-8 inside a JSON string
            self._malformed("not_json", str(exc))
        except Exception as exc:  # RecursionError on deep nesting, or a bug: this datagram only
            self._malformed("error", f"{type(exc).__name__}: {exc}")

    def _handle(self, data: memoryview, *, truncated: bool, peer: Peer) -> None:
        """Validate one datagram and queue its record; raise :class:`RecordError` if bad."""
        if truncated:
            raise RecordError(
                "too_large", f"datagram exceeds {MAX_DATAGRAM_BYTES} bytes (truncated)"
            )
        dg = self._decoder.decode(data)
        if dg.v > DATAGRAM_VERSION:
            raise RecordError(
                "unsupported_version",
                f"datagram v {dg.v} is newer than this agent's {DATAGRAM_VERSION}",
            )
        if dg.dropped > self._max_reported_drops:
            raise RecordError(
                "invalid",
                f"dropped {dg.dropped} from pid {dg.pid} exceeds {self._max_reported_drops}",
            )
        if dg.event is not None or dg.manifest is not None:
            self._rank_report(dg, peer)
            return
        if dg.checkpoint is not None:
            self._checkpoint(dg.checkpoint, peer)
            return
        if dg.step is None:
            raise RecordError("invalid", "datagram carries neither a step nor a checkpoint")
        if dg.step.schema_version > SCHEMA_VERSION:
            raise RecordError(
                "unsupported_version",
                f"schema_version {dg.step.schema_version} is newer than {SCHEMA_VERSION}",
            )
        step = dg.step
        # Only the step's own float fields: names a sender makes up grow no dictionary.
        nonfinite = sorted(set(dg.nonfinite) & _FLOAT_FIELDS)
        # Who sent it is the kernel's word, never the trainer's.
        step = msgspec.structs.replace(step, nonfinite=tuple(nonfinite) or step.nonfinite,
                                       pid=peer.pid, uid=peer.uid)
        with self._lock:
            if not self.bindings.admit(step.job_id, step.rank, peer, step.step):
                return
            self.steps_received += 1
            if dg.dropped:
                self._count_drops((peer.pid, step.job_id, step.rank), dg.dropped)
            if dg.nonfinite:
                self.nonfinite += 1
                for name in nonfinite or ["unknown"]:
                    self.nonfinite_by_field[name] = self.nonfinite_by_field.get(name, 0) + 1
            if len(self._queue) >= self.max_queue:
                self.steps_dropped += 1
            else:
                self._queue.append(step)

    def _rank_report(self, dg: StepDatagram, peer: Peer) -> None:
        """Queue a trainer's event or manifest if its sender holds the rank."""
        if sum(x is not None for x in (dg.step, dg.checkpoint, dg.event, dg.manifest)) > 1:
            raise RecordError("invalid", "datagram carries more than one of step, checkpoint, "
                                         "event, manifest")
        if dg.event is not None:
            event = trainer_event(dg.event, peer)  # the kernel's pid, not the trainer's
            if self.bindings.admit(dg.event.job_id, event.rank, peer, event.step):
                self.rank_reports.add_event(dg.event.job_id, event)
        elif dg.manifest is not None:
            manifest = env_manifest(dg.manifest)  # RecordError if out of bounds
            if self.bindings.admit(dg.manifest.job_id, manifest.rank, peer):
                self.rank_reports.add_manifest(dg.manifest.job_id, manifest)

    def _count_drops(self, key: tuple[int, str, int], dropped: int) -> None:
        """Add a reporter's new drops to the total (caller holds the lock)."""
        drops = self._client_drops
        previous = drops.get(key, 0)
        if key in drops:
            drops.move_to_end(key)
        if dropped > previous:
            drops[key] = dropped
            self.datagrams_dropped = min(_COUNTER_MAX, self.datagrams_dropped + dropped - previous)
        while len(drops) > self._max_reporters:
            drops.popitem(last=False)
            self.reporters_evicted += 1

    def _checkpoint(self, report: CheckpointReport, peer: Peer) -> None:
        with self._lock:
            if not self.bindings.admit(report.job_id, report.rank, peer, report.step):
                return
            self.checkpoints_received += 1
            if len(self._checkpoints) >= self.max_queue:
                self.steps_dropped += 1
            else:
                self._checkpoints.append(report)

    def drain_checkpoints(self) -> list[CheckpointReport]:
        """Take every checkpoint report queued since the last call."""
        with self._lock:
            out = list(self._checkpoints)
            self._checkpoints.clear()
        return out

    def _malformed(self, reason: str, message: str) -> None:
        with self._lock:
            self.steps_malformed += 1
            self.malformed_by_reason[reason] = self.malformed_by_reason.get(reason, 0) + 1
        # Rate-limited: the counters are the record, the log only says where to look.
        held = self._limiter.allow()
        if held is not None:
            _log.warning(
                "malformed step datagram socket=%s reason=%s (%d more since last warning): %s",
                self.socket_path, reason, held, message[:500],
            )
