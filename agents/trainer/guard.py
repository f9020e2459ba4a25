"""TrainGuard: one call per step makes a PyTorch job report everything the checks need.

    guard = TrainGuard.attach(model, optimizer, sampler=sampler)
    for batch in loader:
        loss = compute(batch); loss.backward(); optimizer.step(); optimizer.zero_grad()
        guard.step(loss)
    guard.close()

Per step (:meth:`TrainGuard.step`, after ``optimizer.step()``): loss; lr of the first
param group (read in an optimizer pre-hook, so the lr the step used); global grad norm
(DDP: the all-reduced buckets; a single process: the gradients before ``zero_grad``;
sharded layouts: none, a shard's norm is not the model's); local grad norm before the
all-reduce (DDP); step time and its compute part; tokens/s; the parameter digest every
``checksum_every`` steps (by default chosen from its measured cost, :mod:`.cadence`;
``checksum_step`` = the step it hashes); the data epoch; the seed fingerprint when it
changes. Once: the layout coordinates, the env fingerprint and its manifest (again after
:meth:`TrainGuard.refresh_manifest` finds it changed). On a GPU the device values come
back asynchronously (:mod:`.readback`): a step's whole record is sent one or two steps
later (its ``checksum_step`` is its own step), never with a device sync; records are
built and sent on a thread of their own (:mod:`.sender`). Collectives: DDP's gradient
buckets are traced; a rank stuck in one for ``waiting_after_s`` reports ``waiting``
(:mod:`.grads`). The end: ``bye`` (:mod:`.exits`).

:meth:`TrainGuard.step` never raises into the training loop: a failure is counted
(``errors``) and logged once. Checkpoint wrappers (:meth:`save`, :meth:`load`,
:meth:`dcp_save`, :meth:`dcp_load`) do raise what ``torch.save``/``load`` raise.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NamedTuple

from trainguard.agents.reporter import StepReporter
from trainguard.agents.trainer.cadence import (
    AUTO,
    DEFAULT_BUDGET,
    DEFAULT_MAX_EVERY,
    Cadence,
    Every,
    agree_max,
)
from trainguard.agents.trainer.checkpoint import CheckpointMethods
from trainguard.agents.trainer.checksum import ParamChecksum, to_hex
from trainguard.agents.trainer.exits import ExitHooks
from trainguard.agents.trainer.fingerprints import (
    build_manifest,
    data_epoch,
    sampler_seed,
    seed_fingerprint,
)
from trainguard.agents.trainer.grads import CommTracer, OptimizerProbe, WaitingWatchdog
from trainguard.agents.trainer.layout import Layout, detect_layout
from trainguard.agents.trainer.readback import Readback, Ready
from trainguard.agents.trainer.sender import Sender
from trainguard.schemas.ranks import ByeReason

__all__ = ["TrainGuard"]

_log = logging.getLogger(__name__)


class _Meta(NamedTuple):
    step: int
    ts: float
    step_time_s: float
    compute_time_s: float | None
    tokens: float | None
    data_epoch: int | None
    checksummed: bool


class TrainGuard(CheckpointMethods):
    """The trainer kit bound to one model, optimizer and reporter (use :meth:`attach`)."""

    def __init__(self, model: Any, optimizer: Any, reporter: StepReporter, *,
                 layout: Layout, checksum_every: Every = AUTO,
                 checksum_budget: float = DEFAULT_BUDGET,
                 checksum_max_every: int = DEFAULT_MAX_EVERY, grad_norms: bool = True,
                 sampler: Any = None,
                 data_seed: int | None = None, code_roots: Iterable[str | os.PathLike[str]] = (),
                 tokens_per_step: float | None = None, start_step: int = 0,
                 waiting_after_s: float = 2.0, torch_seed_shared: bool = False,
                 owns_reporter: bool = False, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self._cadence = Cadence(
            checksum_every, budget=checksum_budget, max_every=checksum_max_every, clock=clock,
            context=f"job={reporter.job_id} rank={reporter.rank}",
            agree=agree_max(checksum_max_every) if checksum_every == AUTO else None)
        if start_step < 0:
            raise ValueError(f"start_step {start_step}: expected >= 0")
        self.model, self.optimizer, self.reporter, self.layout = model, optimizer, reporter, layout
        self.sampler, self.data_seed = sampler, data_seed
        self.tokens_per_step = tokens_per_step
        self.torch_seed_shared = torch_seed_shared
        #: The index the next :meth:`step` reports (settable, e.g. after a resume).
        self.step_index = start_step
        #: Failures inside :meth:`step` (counted, logged once, never raised).
        self.errors = 0
        self._owns_reporter = owns_reporter
        self._clock = clock
        self._lock = threading.RLock()
        self._busy_every_s = waiting_after_s
        self._busy_phases = {}
        self._closed = self._bye_sent = False
        self._seed_state: tuple[int | None, int | None] | None = None
        self.checksum = ParamChecksum(model.parameters())
        self._readback = Readback()
        self._sender = Sender(self._emit)
        self.tracer: CommTracer | None = None
        self._watchdog: WaitingWatchdog | None = None
        if _is_ddp(model):
            tracer = CommTracer(getattr(model, "process_group", None), clock=clock,
                                norms=grad_norms)
            if tracer.install(model):
                self.tracer = tracer
                self._watchdog = WaitingWatchdog(tracer, self._waiting, after_s=waiting_after_s,
                                                 clock=clock)
        self._probe = None if optimizer is None else OptimizerProbe(
            optimizer, clock=clock,
            grad_norm=grad_norms and self.tracer is None and not layout.sharded)
        self._code_roots = tuple(code_roots)
        self.manifest = build_manifest(self._code_roots)
        reporter.env_fingerprint = self.manifest.fingerprint
        self._manifest_sent = False
        self._update_seed()
        self._send_manifest()
        self._exits = ExitHooks(self.bye)
        self._exits.install()
        if self._watchdog is not None:
            self._watchdog.start()
        self._step_start = clock()

    @classmethod
    def attach(cls, model: Any, optimizer: Any, *, reporter: StepReporter | None = None,
               checksum_every: Every = AUTO, sampler: Any = None, data_seed: int | None = None,
               code_roots: Iterable[str | os.PathLike[str]] = (), layout: Layout | None = None,
               tokens_per_step: float | None = None, start_step: int = 0,
               waiting_after_s: float = 2.0, torch_seed_shared: bool = False,
               checksum_budget: float = DEFAULT_BUDGET,
               checksum_max_every: int = DEFAULT_MAX_EVERY,
               grad_norms: bool = True) -> TrainGuard:
        """Attach to ``model`` (plain, DDP, FSDP, FSDP2) and ``optimizer``.

        ``reporter``: :meth:`StepReporter.from_env` unless given; the layout's coordinates
        are set on it. ``checksum_every``: digest the parameters at the steps whose index is a
        multiple of N (0: never); ``"auto"`` (default): every step for the first 8, then N =
        the smallest power of two keeping the digest's average cost within
        ``checksum_budget`` (0.5 %) of the step time, at most ``checksum_max_every`` (64);
        in a distributed job the ranks agree on the largest N any of them chose (one
        all-reduce at the 8th step: attach on EVERY rank, or pass an int), so all
        replicas digest the same steps (:mod:`.cadence`). ``grad_norms=False``: no grad
        norms (global nor local; one pass over the gradients saved, DDP: two);
        collectives are still traced.
        ``sampler`` (a ``DistributedSampler``) or ``data_seed``: the data-order seed of the
        seed fingerprint; ``sampler.epoch`` gives the data epoch. ``torch_seed_shared``:
        every rank seeds torch alike, so ``torch.initial_seed()`` joins the fingerprint.
        ``code_roots``: folders of the job's own code besides the script's.
        ``layout``: explicit coordinates, else read from the model.
        ``tokens_per_step``: for tokens/s when :meth:`step` gets no ``tokens``.
        ``waiting_after_s``: report ``waiting`` after this long inside a collective.
        """
        found = layout if layout is not None else detect_layout(model)
        owns = reporter is None
        if reporter is None:
            reporter = StepReporter.from_env(None, **found.reporter_options())
        else:
            for name, value in found.reporter_options().items():
                if value is not None:
                    setattr(reporter, name, value)
        return cls(model, optimizer, reporter, layout=found, checksum_every=checksum_every,
                   checksum_budget=checksum_budget, checksum_max_every=checksum_max_every,
                   grad_norms=grad_norms,
                   sampler=sampler, data_seed=data_seed, code_roots=code_roots,
                   tokens_per_step=tokens_per_step, start_step=start_step,
                   waiting_after_s=waiting_after_s, torch_seed_shared=torch_seed_shared,
                   owns_reporter=owns)

    # -- per step ---------------------------------------------------------------------

    def step(self, loss: Any = None, *, step: int | None = None,
             tokens: float | None = None) -> None:
        """Report the step just taken (call after ``optimizer.step()``); never raises."""
        if self._closed:
            return
        try:
            self._step(loss, step, tokens)
        except Exception as exc:
            self.errors += 1
            if self.errors == 1:
                _log.warning("trainguard step failed job=%s rank=%d step=%s: %r "
                             "(further failures are counted in guard.errors, not logged)",
                             self.reporter.job_id, self.reporter.rank, step, exc)
        finally:
            self._step_start = self._clock()

    def _step(self, loss: Any, step: int | None, tokens: float | None) -> None:
        now = self._clock()
        index = self.step_index if step is None else int(step)
        self.step_index = index + 1
        lr, optimizer_at, global_norm = (self._probe.take() if self._probe is not None
                                         else (None, None, None))
        local_norm = None
        compute_end = optimizer_at
        if self.tracer is not None:
            grads = self.tracer.take_step()
            local_norm, global_norm = grads.local_norm, grads.global_norm
            compute_end = grads.last_entry or compute_end
        start = self._step_start
        step_time = now - start
        compute = compute_end - start if compute_end is not None and compute_end >= start \
            else None
        checksummed = self._cadence.due(index)
        digest = self._cadence.digest(self.checksum, step_time) if checksummed else None
        self._update_seed()
        meta = _Meta(index, time.time(), step_time, compute,
                     tokens if tokens is not None else self.tokens_per_step,
                     data_epoch(self.sampler), checksummed)
        self._readback.submit(meta, {"loss": loss, "lr": lr, "grad": global_norm,
                                     "local": local_norm}, digest)
        for ready in self._readback.ready():
            self._sender.put(ready)  # built and sent off the training thread
        if not self._manifest_sent:
            self._send_manifest()

    @property
    def checksum_every(self) -> int:
        """Digest every this many steps (0: never; 1 while ``"auto"`` calibrates)."""
        return self._cadence.every

    @checksum_every.setter
    def checksum_every(self, every: int) -> None:
        self._cadence = Cadence(every, budget=self._cadence.budget,
                                max_every=self._cadence.max_every)

    def _emit(self, ready: Ready) -> None:
        meta: _Meta = ready.meta
        values = ready.values
        tokens_per_s = (meta.tokens / meta.step_time_s
                        if meta.tokens is not None and meta.step_time_s > 0 else None)
        with self._lock:
            self.reporter.report(
                meta.step, ts=meta.ts, loss=values.get("loss"), lr=values.get("lr"),
                grad_norm=values.get("grad"), local_grad_norm=values.get("local"),
                step_time_s=meta.step_time_s, compute_time_s=meta.compute_time_s,
                tokens_per_s=tokens_per_s, data_epoch=meta.data_epoch,
                param_checksum=to_hex(ready.checksum) if ready.checksum is not None else None,
                checksum_step=meta.step if ready.checksum is not None else None,
            )

    def _update_seed(self) -> None:
        seed = sampler_seed(self.sampler) if self.sampler is not None else self.data_seed
        torch_seed = None
        if self.torch_seed_shared:
            import torch

            torch_seed = torch.initial_seed()
        state = (seed, torch_seed)
        if state != self._seed_state:
            self._seed_state = state
            self.reporter.seed_fingerprint = seed_fingerprint(seed, torch_seed)

    def refresh_manifest(self) -> bool:
        """Rebuild the manifest (e.g. after a late import); send it if it changed.

        Returns whether the fingerprint changed. Steps carry the new fingerprint after it.
        """
        manifest = build_manifest(self._code_roots)
        if manifest.fingerprint == self.manifest.fingerprint:
            return False
        self.manifest = manifest
        self.reporter.env_fingerprint = manifest.fingerprint
        self._send_manifest()
        return True

    def _send_manifest(self) -> None:
        with self._lock:
            self._manifest_sent = self.reporter.manifest(self.manifest.fingerprint,
                                                         self.manifest.entries)

    def _waiting(self, since: float, collective: int) -> None:
        with self._lock:
            self.reporter.event("waiting", since=since, collective=collective,
                                step=self.step_index)

    # -- the end ------------------------------------------------------------------------

    def bye(self, reason: ByeReason) -> None:
        """Send the steps still queued and ``bye`` (once); :meth:`close` calls it."""
        with self._lock:
            if self._bye_sent:
                return
            self._bye_sent = True
        try:
            for ready in (self._readback.flush() if reason == "finished"
                          else self._readback.ready()):
                self._sender.put(ready)
        finally:
            self._sender.stop()  # every queued step goes out before the bye
            with self._lock:
                self.reporter.event("bye", reason=reason, step=self.step_index)

    def close(self, reason: ByeReason = "finished") -> None:
        """Say ``bye`` (``finished``), stop the watchdog, remove the hooks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.stop()
        try:
            self.bye(reason)
        finally:
            if self._probe is not None:
                self._probe.remove()
            self._exits.uninstall()
            if self._owns_reporter:
                self.reporter.close()

    def __enter__(self) -> TrainGuard:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("terminated")
        else:
            self.close("error")


def _is_ddp(model: Any) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)
