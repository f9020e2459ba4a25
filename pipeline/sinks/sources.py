"""Which message a stored row came from: so a row the store refuses costs its own message.

The sink writes rows and intake items by table; when one is refused it needs the Kafka
message behind it, to dead-letter those bytes. :class:`IngestSources` answers
``(table, index) → message`` for the rows and intake items one
:meth:`~trainguard.pipeline.ingest.Ingestor.ingest` call made, by replaying what ingest
does with each accepted message: its record becomes one intake item
(:func:`~trainguard.pipeline.sinks.intake.intake_item`) or its rows
(:func:`~trainguard.pipeline.sinks.rows.rows_for`), appended in message order, so the
n-th item or row of a table belongs to the n-th message that produced one. The replay
runs only when something was refused. Rows appended later by other stages (anomalies,
findings, dead letters) have no message: the sink dead-letters their own bytes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from trainguard.pipeline.dead_letters import RawMessage
from trainguard.pipeline.sinks.intake import intake_item
from trainguard.pipeline.sinks.rows import rows_for

if TYPE_CHECKING:
    from trainguard.pipeline.ingest import IngestResult

__all__ = ["IngestSources", "SourceOf"]

log = logging.getLogger(__name__)

#: ``(table, index of the row or line in that table's batch) → its message``, if known.
SourceOf = Callable[[str, int], RawMessage | None]


class IngestSources:
    """The messages behind one ingest result's rows and intake items; build it after ingest."""

    def __init__(self, messages: Sequence[RawMessage], result: IngestResult) -> None:
        self._messages = list(messages)
        self._records = list(result.decoded)
        # Taken now: later stages may quarantine more, but ingest's rows are already made.
        self._dead = {id(d.source) for d in result.dead}
        self._by_table: dict[str, list[RawMessage]] | None = None

    def __call__(self, table: str, index: int) -> RawMessage | None:
        """The message whose record made row (or intake item) ``index`` of ``table``, if any."""
        if self._by_table is None:
            self._by_table = self._replay()
        made = self._by_table.get(table) or []
        return made[index] if 0 <= index < len(made) else None

    def _replay(self) -> dict[str, list[RawMessage]]:
        accepted = [m for m in self._messages if id(m) not in self._dead]
        if len(accepted) != len(self._records):
            log.warning("cannot match rows to messages accepted=%d records=%d; refused rows "
                        "are dead-lettered with their own bytes", len(accepted),
                        len(self._records))
            return {}
        by_table: dict[str, list[RawMessage]] = defaultdict(list)
        for message, record in zip(accepted, self._records, strict=True):
            intake = intake_item(record, message.partition, message.offset)
            if intake is not None:
                by_table[intake[0]].append(message)
                continue
            for table, _row in rows_for(record, message.partition, message.offset):
                by_table[table].append(message)
        return by_table
