"""Rows held as Arrow columns: a table's rows that a stage makes many of at once.

The baselines stage snapshots every live entity's baseline once a minute: 280,000 rows at
5,000 nodes. As dicts they cost ~0.8 s of the event loop's and the store thread's time per
snapshot (building, the per-row time check, JSON encoding) and stall the batch that makes
them. :class:`ColumnRows` keeps them as one Arrow table: the store sink inserts it as one
Arrow block and checks its time columns with one vectorized pass. It is still a
``Sequence`` of row dicts, built on demand, so the paths that handle rows one at a time
(the sink's bisection of a block the store refuses, dead letters, tests) work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import pyarrow as pa
import pyarrow.compute as pc

from trainguard.pipeline.sinks.rows import Row
from trainguard.pipeline.sinks.times import STORE_TS_MAX, STORE_TS_MIN

__all__ = ["ColumnRows", "column_rows"]


class ColumnRows(Sequence[Row]):
    """A table's rows as one Arrow table, read as row dicts only where one is asked for."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> ColumnRows: ...

    def __getitem__(self, index: int | slice) -> Row | ColumnRows:
        n = self.table.num_rows
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                raise ValueError(f"ColumnRows slices take step 1, got {step}")
            return ColumnRows(self.table.slice(start, max(0, stop - start)))
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"row {index} of {n}")
        row: Row = self.table.slice(i, 1).to_pylist()[0]
        return row

    def __iter__(self) -> Iterator[Row]:
        return iter(self.table.to_pylist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by value

    def __repr__(self) -> str:
        return f"ColumnRows({self.table.num_rows} rows: {', '.join(self.table.column_names)})"

    def times_storable(self, columns: Sequence[str]) -> bool:
        """True when every value of the time ``columns`` it has is in the store's range.

        False sends the caller to the per-row check, which names each bad value.
        """
        for name in columns:
            if name not in self.table.column_names:
                continue
            col: Any = self.table.column(name)
            if not pa.types.is_floating(col.type) or col.null_count:
                return False
            if not len(col):
                continue
            lo, hi = pc.min_max(col).values()
            # NaN never compares in range: min_max skips it, so count it apart.
            if pc.sum(pc.is_nan(col)).as_py() or not (
                    STORE_TS_MIN <= lo.as_py() and hi.as_py() <= STORE_TS_MAX):
                return False
        return True


def column_rows(columns: dict[str, Any], schema: pa.Schema) -> ColumnRows:
    """``columns`` (name -> numpy array or list) as :class:`ColumnRows` of ``schema``."""
    return ColumnRows(pa.Table.from_pydict(columns, schema=schema))
