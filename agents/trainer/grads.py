"""Gradient norms, collective timestamps and the ``waiting`` watchdog.

:class:`CommTracer` is a DDP communication hook wrapping PyTorch's default all-reduce
hook. For each gradient bucket DDP hands over it records, before launching the
all-reduce, the bucket's L2 norm (this rank's own gradients: the **local** grad norm that
shows one rank's scaled gradients) and the time (the collective's entry); when the
all-reduce completes, in the future's callback, the averaged bucket's norm (the **global**
grad norm, without a second pass over ``p.grad``) and the time (its exit). Each norm is
one fused reduction over the bucket's flat buffer, left on its device; the step's norm is
the L2 norm of the buckets' norms (on the CPU: a few floats combined on the host).
Each bucket is one collective, numbered in the order DDP hands them over; every rank of
a DDP job hands over the same buckets in the same order, so the sequence numbers agree
across ranks (buckets per step × steps).

From these a step's time splits into **compute** (step start → the last bucket handed
to the all-reduce: forward, backward) and **wait**: a slow rank has a long compute time,
its peers wait for it.

:class:`WaitingWatchdog` is a daemon thread: when the rank has been inside a collective
(hook called, all-reduce not complete) for ``after_s``, it reports ``waiting`` (since
when, which collective) every ``after_s`` until the collective completes. A dead or
stopped rank never enters the collective its peers wait in, so it is the one rank not
reporting ``waiting``.

:class:`OptimizerProbe` is an optimizer step pre-hook: the lr of the first param group,
the time and (without DDP) the grad norm (one fused ``_foreach_norm`` pass per device),
read when the gradients are final and before the user's ``zero_grad()``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CommTracer", "OptimizerProbe", "StepGrads", "WaitingWatchdog", "unwrap_optimizer"]

_log = logging.getLogger(__name__)


@dataclass
class StepGrads:
    """What the hooks saw during one step."""

    #: L2 norms (floats, or 0-dim float32 tensors on the device), ``None`` when not seen.
    local_norm: Any = None
    global_norm: Any = None
    #: Monotonic time the last bucket was handed to the all-reduce, and the last one done.
    last_entry: float | None = None
    last_exit: float | None = None
    collectives: int = 0


def _norm(t: torch.Tensor) -> torch.Tensor:
    """One fused pass: the L2 norm of a bucket, accumulated in float32 (a device scalar)."""
    import torch

    return torch.linalg.vector_norm(t, dtype=torch.float32)


def _total(parts: list[Any]) -> Any:
    """The L2 norm of the parts' norms: a float on the CPU, a device scalar else."""
    if not parts:
        return None
    first = parts[0]
    if first.device.type == "cpu":  # no sync to fear: a few scalars read on the host
        return math.hypot(*(float(p) for p in parts)) if len(parts) > 1 else float(first)
    if len(parts) == 1:
        return first
    import torch

    return torch.linalg.vector_norm(torch.stack(parts))


class CommTracer:
    """DDP comm hook: local/global grad norms and collective timestamps."""

    def __init__(self, process_group: Any = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, norms: bool = True) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self._group, self._norms = process_group, norms
        self._allreduce = allreduce_hook
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._seq = 0
        # One norm per bucket (list slot = bucket index), this rank's own and all-reduced.
        self._local: list[Any] = []
        self._global: list[Any] = []
        self._last_entry: float | None = None
        self._last_exit: float | None = None
        self._count = 0
        # seq -> (monotonic entry, wall entry)
        self._inflight: dict[int, tuple[float, float]] = {}
        self.installed = False

    def install(self, ddp: Any) -> bool:
        """Register on a ``DistributedDataParallel`` module; ``False`` if it has a hook."""
        try:
            ddp.register_comm_hook(state=self, hook=_hook)
        except RuntimeError as exc:  # DDP allows one comm hook; the user's wins
            _log.warning("ddp comm hook not installed (local grad norm and collective "
                         "tracing off): %s", exc)
            return False
        self.installed = True
        return True

    @property
    def sequence(self) -> int:
        """Collectives handed over so far (the next one's sequence number)."""
        return self._seq

    def on_bucket(self, bucket: Any) -> Any:
        """The hook body: record, launch PyTorch's default all-reduce, trace its end."""
        seq, index = self._enter(bucket)
        fut = self._allreduce(self._group, bucket)
        return fut.then(lambda f: self._done(seq, index, f))

    def _enter(self, bucket: Any) -> tuple[int, int]:
        """The bucket's own norm (one pass, queued on its device) and the entry time."""
        index = bucket.index()
        local = _norm(bucket.buffer()) if self._norms else None
        now, wall = self._clock(), self._wall()
        with self._lock:
            seq = self._seq
            self._seq += 1
            self._count += 1
            _put(self._local, index, local)
            self._last_entry = now
            self._inflight[seq] = (now, wall)
        return seq, index

    def _done(self, seq: int, index: int, fut: Any) -> Any:
        try:
            reduced = fut.value()  # raises if the all-reduce failed: DDP must see it
            # The all-reduced (averaged) bucket: the global norm without another pass
            # over the parameters' ``.grad``.
            if self._norms:
                done = _norm(reduced)
                with self._lock:
                    _put(self._global, index, done)
            return reduced
        finally:
            now = self._clock()
            with self._lock:
                self._inflight.pop(seq, None)
                self._last_exit = now

    def oldest_inflight(self) -> tuple[int, float, float] | None:
        """``(seq, monotonic entry, wall entry)`` of the oldest unfinished collective."""
        with self._lock:
            if not self._inflight:
                return None
            seq = min(self._inflight)
            entry, wall = self._inflight[seq]
        return seq, entry, wall

    def take_step(self) -> StepGrads:
        """What this step's buckets saw; resets for the next step."""
        with self._lock:
            local = [v for v in self._local if v is not None]
            glob = [v for v in self._global if v is not None]
            out = StepGrads(last_entry=self._last_entry, last_exit=self._last_exit,
                            collectives=self._count)
            self._local = [None] * len(self._local)
            self._global = [None] * len(self._global)
            self._count = 0
            self._last_entry = self._last_exit = None
        out.local_norm, out.global_norm = _total(local), _total(glob)
        return out


def _put(slots: list[Any], index: int, value: Any) -> None:
    if index >= len(slots):
        slots.extend([None] * (index + 1 - len(slots)))
    slots[index] = value


def _hook(state, bucket):
    # Unannotated on purpose: DDP refuses a hook whose annotations are not exactly
    # ``dist.GradBucket`` / ``Future[Tensor]`` (and these would be strings here).
    return state.on_bucket(bucket)


class WaitingWatchdog:
    """Reports ``waiting`` while the rank sits in a collective (see the module notes)."""

    def __init__(self, tracer: CommTracer, send: Callable[[float, int], None], *,
                 after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if after_s <= 0:
            raise ValueError(f"waiting_after_s {after_s}: expected > 0")
        self._tracer, self._send, self._after_s, self._clock = tracer, send, after_s, clock
        self._stop = threading.Event()
        self._last_sent: tuple[int, float] | None = None
        self._thread = threading.Thread(target=self._run, name="trainguard-waiting",
                                        daemon=True)
        #: ``waiting`` events sent.
        self.sent = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (returns at once if it is not running)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def poll(self) -> bool:
        """One check; ``True`` if a ``waiting`` was sent (the thread calls it)."""
        oldest = self._tracer.oldest_inflight()
        if oldest is None:
            return False
        seq, entry, wall = oldest
        now = self._clock()
        if now - entry < self._after_s:
            return False
        if self._last_sent is not None and self._last_sent[0] == seq \
                and now - self._last_sent[1] < self._after_s:
            return False
        self._last_sent = (seq, now)
        self.sent += 1
        self._send(wall, seq)
        return True

    def _run(self) -> None:
        interval = min(0.25, self._after_s / 4)
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:  # the watchdog must never take the training process down
                _log.exception("waiting watchdog check failed")


class OptimizerProbe:
    """Optimizer step pre-hook: lr, time and (optionally) the grad norm of the step."""

    def __init__(self, optimizer: Any, *, grad_norm: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._optimizer = unwrap_optimizer(optimizer)
        self._grad_norm, self._clock = grad_norm, clock
        self.lr: Any = None
        self.at: float | None = None
        self.norm: Any = None
        self._handle = self._optimizer.register_step_pre_hook(self._pre_step)

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.at = self._clock()
        groups = optimizer.param_groups
        self.lr = groups[0].get("lr") if groups else None
        if self._grad_norm:
            self.norm = _grad_norm(groups)

    def take(self) -> tuple[Any, float | None, Any]:
        """``(lr, time, grad norm)`` of the last optimizer step; resets time and norm."""
        out = (self.lr, self.at, self.norm)
        self.at, self.norm = None, None
        return out

    def remove(self) -> None:
        """Unregister the hook."""
        self._handle.remove()


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a framework's wrapper, if any.

    accelerate's ``.optimizer``, Lightning's ``._optimizer``: the inner optimizer's
    ``step`` is the one that runs step hooks.
    """
    seen = 0
    while seen < 4:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None or inner is optimizer or not hasattr(inner, "param_groups"):
            return optimizer
        optimizer, seen = inner, seen + 1
    return optimizer


def _grad_norm(groups: list[dict[str, Any]]) -> Any:
    """The gradients' global L2 norm: one fused pass per device, float32 accumulation."""
    import torch

    grads = [p.grad for g in groups for p in g["params"] if p.grad is not None]
    if not grads:
        return None
    device = grads[0].device
    if all(g.device == device for g in grads):
        parts = [torch.linalg.vector_norm(torch.stack(
            torch._foreach_norm(grads, 2, dtype=torch.float32)))]
    else:
        by_device: dict[Any, list[torch.Tensor]] = {}
        for grad in grads:
            by_device.setdefault(grad.device, []).append(grad)
        parts = [torch.linalg.vector_norm(torch.stack(
            torch._foreach_norm(same, 2, dtype=torch.float32))).to(device)
            for same in by_device.values()]
    return _total(parts)
