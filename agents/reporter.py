"""The step reporter: a training process hands each step's metrics to the node agent.

Imported inside training scripts, so it is deliberately tiny: the standard library,
msgspec and the wire schema, nothing else. ``StepReporter.from_env()`` reads the job and
rank from torchrun, SLURM or MPI (:mod:`~trainguard.agents.job_env`). A report is one small
JSON datagram sent over a non-blocking Unix datagram socket to the agent's
:class:`trainguard.agents.intake.StepIntake`.

The one promise: **a slow or dead agent never stalls a training step.** ``report()``
never blocks and never raises. When the agent is not running, or its queue is full,
the datagram is dropped and counted; the cumulative drop count rides along in every
later datagram, so the agent (and the pipeline) learns how much it missed.

    reporter = StepReporter.from_env()  # or StepReporter("run3", rank=r, world_size=n)
    for step in range(steps):
        loss = train_step()
        reporter.report(step, loss=loss, lr=sched.get_last_lr()[0])
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from trainguard import envvars
from trainguard.agents.job_env import job_identity
from trainguard.schemas.ranks import BusyPhase, ByeReason
from trainguard.schemas.records import STEP_FLOAT_FIELDS, StepRecord

__all__ = [
    "CheckpointReport", "DATAGRAM_VERSION", "DEFAULT_SOCKET", "MAX_REPORTED_DROPS",
    "ManifestReport", "StepDatagram", "StepReporter", "TrainerEvent",
]

_log = logging.getLogger(__name__)

#: Where the node agent listens unless configured otherwise.
DEFAULT_SOCKET: Final = "/run/trainguard/steps.sock"
#: The envelope version this reporter writes (the step inside carries its own version).
DATAGRAM_VERSION: Final = 1
#: The largest drop count a datagram carries (the agent refuses larger ones as forged):
#: over a century of reports at 1 Hz.
MAX_REPORTED_DROPS: Final = 2**32 - 1

# Positional order of the float fields checked for NaN/inf in ``report()``.
_FLOAT_FIELDS: Final = STEP_FLOAT_FIELDS
# Shared, never mutated: the common case of "every value finite" allocates nothing.
_NO_NONFINITE: Final[list[str]] = []


class CheckpointReport(msgspec.Struct, kw_only=True, frozen=True):
    """A rank saved or loaded its checkpoint shard.

    The agent adds the cluster and sends it on as a
    :class:`~trainguard.schemas.records.CheckpointEvent`.
    """

    job_id: Annotated[str, Meta(min_length=1, max_length=256)]
    rank: Annotated[int, Meta(ge=0, le=2**32 - 1)]
    node: Annotated[str, Meta(min_length=1, max_length=256)]
    step: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    ts: Annotated[float, Meta(ge=0)]
    action: Literal["save", "load"]
    checkpoint_id: Annotated[str, Meta(min_length=1, max_length=256)]
    digest: Annotated[str, Meta(min_length=8, max_length=128, pattern="^[0-9a-fA-F]+$")]
    #: The shard's file (absolute path), when it is one file the agent's witness can hash.
    path: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None


class TrainerEvent(msgspec.Struct, kw_only=True, frozen=True):
    """The trainer kit says something about its process: ``bye``, ``waiting`` or ``busy``.

    The agent stamps the pid the kernel reports and sends it on as a
    :class:`~trainguard.schemas.ranks.RankEvent` in the job's step batch.
    """

    job_id: Annotated[str, Meta(min_length=1, max_length=256)]
    rank: Annotated[int, Meta(ge=0, le=2**32 - 1)]
    ts: Annotated[float, Meta(ge=0)]
    event: Literal["bye", "waiting", "busy"]
    reason: ByeReason | None = None
    phase: BusyPhase | None = None
    step: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    since: Annotated[float, Meta(ge=0)] | None = None
    collective: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None


class ManifestReport(msgspec.Struct, kw_only=True, frozen=True):
    """The manifest behind this rank's ``env_fingerprint`` (sent when it changes)."""

    job_id: Annotated[str, Meta(min_length=1, max_length=256)]
    rank: Annotated[int, Meta(ge=0, le=2**32 - 1)]
    ts: Annotated[float, Meta(ge=0)]
    fingerprint: Annotated[str, Meta(min_length=1, max_length=128)]
    entries: dict[str, str]


class StepDatagram(msgspec.Struct, kw_only=True, frozen=True):
    """The envelope around one :class:`StepRecord` on the reporter → agent socket."""

    v: Annotated[int, Meta(ge=1)] = DATAGRAM_VERSION
    #: The sending process; with the step's job and rank it identifies one reporter.
    pid: Annotated[int, Meta(ge=0)]
    #: The reporter's cumulative count of datagrams it could not hand over.
    dropped: Annotated[int, Meta(ge=0)]
    #: One step's record, or (``checkpoint``) one checkpoint shard saved or loaded.
    step: StepRecord | None = None
    checkpoint: CheckpointReport | None = None
    #: (``event``) the trainer kit's ``bye`` or ``waiting``; (``manifest``) the files and
    #: versions behind the rank's ``env_fingerprint``.
    event: TrainerEvent | None = None
    manifest: ManifestReport | None = None
    #: Fields whose value was NaN or ±inf; JSON cannot carry them, so they are ``None``
    #: in ``step`` and named here for the agent to count and flag.
    nonfinite: list[str] = []


# Reporters alive in this process, so a fork can give the child its own identity.
_live: weakref.WeakSet[StepReporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reporter in list(_live):
        reporter._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _clean(values: tuple[object, ...]) -> tuple[list[float | None], list[str]]:
    """Coerce values to float and replace NaN/inf by ``None`` (slow path only)."""
    cleaned: list[float | None] = []
    nonfinite: list[str] = []
    for name, value in zip(_FLOAT_FIELDS, values, strict=True):
        if value is None:
            cleaned.append(None)
            continue
        # float() accepts ints and numpy/torch scalars; anything else raises and the
        # caller counts the report as dropped.
        number = float(value)  # type: ignore[arg-type]
        if math.isfinite(number):
            cleaned.append(number)
        else:
            cleaned.append(None)
            nonfinite.append(name)
    return cleaned, nonfinite


class StepReporter:
    """Sends one rank's step records to the local agent; never blocks, never raises.

    Not thread-safe: use one reporter per thread (the counters are plain ints).
    """

    def __init__(
        self,
        job_id: str,
        rank: int,
        world_size: int,
        *,
        socket_path: str = DEFAULT_SOCKET,
        node: str | None = None,
        local_rank: int | None = None,
        gpu_index: int | None = None,
        env_fingerprint: str | None = None,
        seed_fingerprint: str | None = None,
        dp_rank: int | None = None,
        tp_rank: int | None = None,
        pp_rank: int | None = None,
        shard: int | None = None,
        ep_rank: int | None = None,
        reconnect_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Fail fast at start-up: a misconfigured reporter would otherwise send
        # records the agent rejects on every step.
        if not job_id or len(job_id) > 256:
            raise ValueError(f"job_id {job_id!r}: expected 1 to 256 characters")
        if world_size < 1:
            raise ValueError(f"world_size {world_size}: expected >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank}: expected 0 <= rank < world_size ({world_size})")
        self.job_id = job_id
        self.rank = rank
        self.world_size = world_size
        self.node = node or socket.gethostname()
        self.local_rank = local_rank
        self.gpu_index = gpu_index
        self.env_fingerprint = env_fingerprint
        self.seed_fingerprint = seed_fingerprint
        self.dp_rank, self.tp_rank, self.pp_rank = dp_rank, tp_rank, pp_rank
        self.shard, self.ep_rank = shard, ep_rank
        self.socket_path = socket_path
        #: Datagrams handed to the agent, and those that could not be.
        self.sent = 0
        self.dropped = 0
        self._reconnect_interval_s = reconnect_interval_s
        self._clock = clock
        self._encoder = msgspec.json.Encoder()
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._next_connect = 0.0
        self._closed = False
        self._warned: set[str] = set()
        _live.add(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **options: Any) -> StepReporter:
        """A reporter for this process, its place read from the launcher's environment.

        Job, rank, world size, local rank and node come from torchrun, SLURM or MPI (see
        :mod:`~trainguard.agents.job_env` for the precedence). ``options`` are the
        constructor's keyword arguments (``env_fingerprint``, ``dp_rank``, ...); an
        explicit ``node`` or ``local_rank`` wins over the environment's. The socket is
        ``TRAINGUARD_STEPS_SOCKET`` when set. Raises :class:`~trainguard.errors.ConfigError`
        with one line when nothing identifies the job.
        """
        env = os.environ if environ is None else environ
        who = job_identity(env)
        options.setdefault("node", who.node)
        options.setdefault("local_rank", who.local_rank)
        options.setdefault("socket_path", env.get(envvars.STEPS_SOCKET) or DEFAULT_SOCKET)
        return cls(who.job_id, who.rank, who.world_size, **options)

    def report(
        self,
        step: int,
        *,
        loss: float | None = None,
        grad_norm: float | None = None,
        lr: float | None = None,
        step_time_s: float | None = None,
        samples_per_s: float | None = None,
        tokens_per_s: float | None = None,
        loss_scale: float | None = None,
        param_checksum: str | None = None,
        local_grad_norm: float | None = None,
        compute_time_s: float | None = None,
        ts: float | None = None,
        data_epoch: int | None = None,
        checksum_step: int | None = None,
    ) -> bool:
        """Hand one step's record to the agent; ``True`` if it was, ``False`` if dropped.

        ``True`` means handed over, not accepted: the agent validates (a negative
        ``step``, say, is counted there as malformed). ``ts`` defaults to now.
        """
        sock = self._sock
        if sock is None:
            sock = self._connect()
            if sock is None:
                self.dropped += 1
                return False
        try:
            values = (loss, grad_norm, lr, step_time_s, samples_per_s, tokens_per_s, loss_scale,
                      local_grad_norm, compute_time_s)
            nonfinite = _NO_NONFINITE
            for value in values:
                # ``x - x`` is 0.0 for every finite float and NaN otherwise: one cheap
                # test per value on the hot path, the slow path only when needed.
                if value is not None and (type(value) is not float or value - value != 0.0):
                    cleaned, nonfinite = _clean(values)
                    (loss, grad_norm, lr, step_time_s, samples_per_s, tokens_per_s, loss_scale,
                     local_grad_norm, compute_time_s) = cleaned
                    break
            record = StepRecord(
                job_id=self.job_id,
                rank=self.rank,
                world_size=self.world_size,
                node=self.node,
                step=step,
                ts=time.time() if ts is None else ts,
                local_rank=self.local_rank,
                gpu_index=self.gpu_index,
                loss=loss,
                grad_norm=grad_norm,
                lr=lr,
                step_time_s=step_time_s,
                samples_per_s=samples_per_s,
                tokens_per_s=tokens_per_s,
                loss_scale=loss_scale,
                param_checksum=param_checksum,
                env_fingerprint=self.env_fingerprint,
                local_grad_norm=local_grad_norm,
                compute_time_s=compute_time_s,
                seed_fingerprint=self.seed_fingerprint,
                dp_rank=self.dp_rank,
                tp_rank=self.tp_rank,
                pp_rank=self.pp_rank,
                shard=self.shard,
                ep_rank=self.ep_rank,
                data_epoch=data_epoch,
                checksum_step=checksum_step,
            )
            data = self._encoder.encode(
                StepDatagram(pid=self._pid, dropped=min(self.dropped, MAX_REPORTED_DROPS),
                             step=record, nonfinite=nonfinite)
            )
        except Exception as exc:  # a value msgspec cannot encode: the step must go on
            return self._drop("unencodable", exc)
        return self._send(sock, data)

    def _send(self, sock: socket.socket, data: bytes) -> bool:
        try:
            sock.send(data)
        except BlockingIOError as exc:
            # The agent's queue is full: keep the connection, lose this one record.
            return self._drop("agent_busy", exc)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:  # this record only; the connection is fine
                return self._drop("too_large", exc)
            # Agent gone or restarted (ECONNREFUSED, ENOTCONN...): reconnect later.
            self._disconnect()
            return self._drop("agent_unreachable", exc)
        self.sent += 1
        return True

    def checkpoint(
        self, action: Literal["save", "load"], checkpoint_id: str, digest: str, *, step: int,
        ts: float | None = None, path: str | None = None,
    ) -> bool:
        """Report that this rank saved or loaded its shard of a checkpoint, with its digest.

        Call it after writing the shard (``"save"``) and after reading it back
        (``"load"``), with a digest of the bytes (e.g. ``hashlib.sha256(...).hexdigest()``):
        a shard whose digest at load differs from its digest at save was modified in
        between. ``path``: the shard's file, absolute, when it is one file; with the
        SHA-256 of its bytes as ``digest``, the node agent's witness (which hashes the files
        of its checkpoint directories itself) confirms the save. Never raises; ``False``
        means dropped (and counted).
        """
        sock = self._sock if self._sock is not None else self._connect()
        if sock is None:
            self.dropped += 1
            return False
        try:
            report = CheckpointReport(
                job_id=self.job_id, rank=self.rank, node=self.node, step=step,
                ts=time.time() if ts is None else ts, action=action,
                checkpoint_id=checkpoint_id, digest=digest, path=path,
            )
            data = self._encoder.encode(
                StepDatagram(pid=self._pid, dropped=min(self.dropped, MAX_REPORTED_DROPS),
                             checkpoint=report))
        except Exception as exc:
            return self._drop("unencodable", exc)
        return self._send(sock, data)

    def event(
        self, event: Literal["bye", "waiting", "busy"], *, reason: ByeReason | None = None,
        step: int | None = None, since: float | None = None, collective: int | None = None,
        ts: float | None = None, phase: BusyPhase | None = None,
    ) -> bool:
        """Tell the agent: ``bye`` (and why), ``waiting`` in a collective, or ``busy``.

        ``busy``: in a long ``phase`` of its own (a checkpoint, an evaluation) that its peers
        may wait for in their next collective; repeat it while the phase lasts. Never
        raises; ``False`` means dropped (and counted).
        """
        payload = TrainerEvent(
            job_id=self.job_id, rank=self.rank, ts=time.time() if ts is None else ts,
            event=event, reason=reason, step=step, since=since, collective=collective,
            phase=phase)
        return self._send_payload(event=payload)

    def manifest(self, fingerprint: str, entries: Mapping[str, str],
                 ts: float | None = None) -> bool:
        """Send the manifest behind ``env_fingerprint`` (files and versions → digests).

        Never raises; ``False`` means dropped (too large for one datagram, say).
        """
        payload = ManifestReport(
            job_id=self.job_id, rank=self.rank, ts=time.time() if ts is None else ts,
            fingerprint=fingerprint, entries=dict(entries))
        return self._send_payload(manifest=payload)

    def _send_payload(self, **payload: Any) -> bool:
        sock = self._sock if self._sock is not None else self._connect()
        if sock is None:
            self.dropped += 1
            return False
        try:
            data = self._encoder.encode(
                StepDatagram(pid=self._pid, dropped=min(self.dropped, MAX_REPORTED_DROPS),
                             **payload))
        except Exception as exc:
            return self._drop("unencodable", exc)
        return self._send(sock, data)

    def close(self) -> None:
        """Close the socket; later reports are dropped (and counted)."""
        self._closed = True
        self._disconnect()

    def __enter__(self) -> StepReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> socket.socket | None:
        """Connect if the rate limit allows, so a dead agent costs one clock read per call."""
        if self._closed:
            return None
        now = self._clock()
        if now < self._next_connect:
            return None
        self._next_connect = now + self._reconnect_interval_s
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            self._warn_once("agent_unreachable", exc)
            return None
        self._sock = sock
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _drop(self, reason: str, exc: Exception) -> bool:
        self.dropped += 1
        self._warn_once(reason, exc)
        return False

    def _warn_once(self, reason: str, exc: Exception) -> None:
        # Once per reason per reporter: a training log must not fill with our warnings;
        # the drop count reaches the agent with the next datagram that gets through.
        if reason not in self._warned:
            self._warned.add(reason)
            _log.warning(
                "step report dropped reason=%s socket=%s job=%s rank=%d: %s "
                "(further drops are counted, not logged)",
                reason,
                self.socket_path,
                self.job_id,
                self.rank,
                exc,
            )

    def _reset_after_fork(self) -> None:
        # The child is a new sender: its own pid, its own counts, its own socket.
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._pid = os.getpid()
        self.sent = 0
        self.dropped = 0
        self._next_connect = 0.0
