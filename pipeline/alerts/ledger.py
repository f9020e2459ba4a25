"""The delivery ledger: which alert state reached which receiver, so none is sent twice.

The dispatcher consults it before each send and writes the final outcome of each state
at each receiver; :class:`MemoryLedger` also buffers the ``alert_deliveries`` rows that
the worker writes to the store, and is preloaded from that table at start.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Literal, Protocol

from trainguard.schemas.records import Alert

__all__ = ["DeliveryLedger", "MemoryLedger", "Outcome"]

Outcome = Literal["delivered", "failed"]


class DeliveryLedger(Protocol):
    """What was delivered where: consulted before each send, written after each outcome."""

    def delivered(self, receiver: str, alert_id: str, status: str) -> bool:
        """True if this state of this alert already reached ``receiver``."""
        ...

    def record(
        self, receiver: str, alert: Alert, outcome: Outcome, attempts: int, detail: str,
        at: float,
    ) -> None:
        """Note the final outcome of one alert state at one receiver, at wall time ``at``."""
        ...


class MemoryLedger:
    """An in-memory :class:`DeliveryLedger` that also buffers ``alert_deliveries`` rows.

    Delivered keys are bounded (the oldest are forgotten): a replay reaches back minutes,
    not days. Rows wait for :meth:`take_rows` (the store sink); beyond ``max_rows`` the
    oldest are dropped and counted in ``dropped_rows`` rather than pinning memory.
    """

    def __init__(self, max_keys: int = 200_000, max_rows: int = 200_000) -> None:
        self.max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._rows: deque[dict[str, Any]] = deque(maxlen=max_rows)
        self.dropped_rows = 0

    def preload(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Mark ``(receiver, alert_id, status)`` keys delivered (read back from the table)."""
        for key in keys:
            self._remember(key)

    def delivered(self, receiver: str, alert_id: str, status: str) -> bool:
        """True if ``(receiver, alert_id, status)`` was delivered (and not yet forgotten)."""
        return (receiver, alert_id, status) in self._keys

    def record(
        self, receiver: str, alert: Alert, outcome: Outcome, attempts: int, detail: str,
        at: float,
    ) -> None:
        """Remember a delivery and buffer its row (failures are rows but not keys)."""
        if outcome == "delivered":
            self._remember((receiver, alert.alert_id, alert.status))
        if len(self._rows) == self._rows.maxlen:
            self.dropped_rows += 1
        self._rows.append({
            "receiver": receiver, "alert_id": alert.alert_id, "fingerprint": alert.fingerprint,
            "status": alert.status, "severity": alert.severity, "outcome": outcome,
            "attempts": attempts, "detail": detail, "ts": at, "alert_ts": alert.ts,
        })

    def take_rows(self) -> list[dict[str, Any]]:
        """Return and forget the buffered ``alert_deliveries`` rows."""
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def _remember(self, key: tuple[str, str, str]) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
