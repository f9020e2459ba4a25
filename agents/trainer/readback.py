"""Device values of a step brought to the host without a per-step device sync.

A step's device scalars (the parameter digest, grad norms, a loss tensor) are packed into
one small tensor, copied with ``non_blocking=True`` into pinned host memory and marked
with a CUDA event. The step's record waits in a short queue and is handed on once its
event has completed (checked with ``event.query()`` at each later step), so on a GPU a
step is reported one or two steps late and never stalls the loop; only when more than
``max_lag`` steps are waiting is the oldest waited for. Values already on the host (a
CPU job, Python floats) need none of this: such a step is ready at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MAX_LAG", "Readback", "Ready"]

#: Steps whose device values may still be in flight before the oldest is waited for.
DEFAULT_MAX_LAG: Final = 2


@dataclass
class Ready:
    """A step's values on the host: floats by name, the digest as an int (or ``None``)."""

    meta: Any
    values: dict[str, float | None]
    checksum: int | None


@dataclass
class _Pending:
    meta: Any
    host: dict[str, float | None]
    names: list[str] = field(default_factory=list)
    checksum_at: int | None = None
    host_checksum: int | None = None
    buffer: torch.Tensor | None = None
    event: Any = None


def _is_device_tensor(value: object) -> bool:
    device = getattr(value, "device", None)
    return device is not None and getattr(device, "type", "cpu") != "cpu"


class Readback:
    """Queues steps until their device values are on the host (see the module notes)."""

    def __init__(self, max_lag: int = DEFAULT_MAX_LAG) -> None:
        if max_lag < 0:
            raise ValueError(f"max_lag {max_lag}: expected >= 0")
        self.max_lag = max_lag
        self._queue: deque[_Pending] = deque()

    def submit(self, meta: Any, values: Mapping[str, Any],
               checksum: torch.Tensor | None = None) -> None:
        """Queue a step; ``values`` are floats, ``None`` or 0-dim tensors (any device)."""
        pending = _Pending(meta=meta, host={})
        device_values: list[torch.Tensor] = []
        for name, value in values.items():
            if _is_device_tensor(value):
                pending.names.append(name)
                device_values.append(value.detach().reshape(()).double())
            elif value is None:
                pending.host[name] = None
            else:
                pending.host[name] = value.item() if hasattr(value, "item") else float(value)
        if checksum is not None and _is_device_tensor(checksum):
            pending.checksum_at = len(device_values)
            device_values.append(checksum.reshape(()).view(_float64()))
        elif checksum is not None:
            pending.host_checksum = int(checksum.item())
        if device_values:
            self._launch(pending, device_values)
        self._queue.append(pending)

    def ready(self) -> list[Ready]:
        """Every queued step whose values have arrived, oldest first (waits only past lag)."""
        out: list[Ready] = []
        while self._queue:
            head = self._queue[0]
            if head.event is not None and not head.event.query():
                if len(self._queue) <= self.max_lag:
                    break
                head.event.synchronize()
            out.append(self._finish(self._queue.popleft()))
        return out

    def flush(self) -> list[Ready]:
        """Every queued step, waiting for the device where needed (at close)."""
        out: list[Ready] = []
        while self._queue:
            head = self._queue.popleft()
            if head.event is not None:
                head.event.synchronize()
            out.append(self._finish(head))
        return out

    def __len__(self) -> int:
        return len(self._queue)

    @staticmethod
    def _launch(pending: _Pending, device_values: list[torch.Tensor]) -> None:
        import torch

        packed = torch.stack(device_values)
        buffer = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
        buffer.copy_(packed, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        pending.buffer, pending.event = buffer, event

    @staticmethod
    def _finish(pending: _Pending) -> Ready:
        values = dict(pending.host)
        checksum = pending.host_checksum
        if pending.buffer is not None:
            floats = pending.buffer.tolist()
            for i, name in enumerate(pending.names):
                values[name] = floats[i]
            if pending.checksum_at is not None:
                import torch

                checksum = int(pending.buffer.view(torch.int64)[pending.checksum_at].item())
        return Ready(meta=pending.meta, values=values, checksum=checksum)


def _float64() -> torch.dtype:
    import torch

    return torch.float64
