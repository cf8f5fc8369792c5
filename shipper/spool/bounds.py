"""How much the spool may hold, and the arithmetic of making room. Pure: the store does the I/O.

`reject` (the default) refuses new rows while the spool is at its bound, so nothing acknowledged is ever dropped;
`drop_oldest` deletes the oldest rows not being sent to make room, and every drop is counted per sink.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shipper.records import NewRow

# What a row costs beyond its payload: the row header, its ids and timestamps, and its index entries.
ROW_OVERHEAD = 96


@dataclass(frozen=True, slots=True)
class Bounds:
    max_bytes: int | None = None
    max_rows: int | None = None
    when_full: str = "reject"
    on_drop: Callable[[Counter[str]], None] | None = None  # told, after commit, how many rows each sink lost

    @property
    def bounded(self) -> bool:
        return self.max_bytes is not None or self.max_rows is not None


def row_bytes(rows: Iterable[NewRow]) -> int:
    return sum(len(r.body) + len(r.path) + len(r.query or b"") + ROW_OVERHEAD for r in rows)


def excess(bounds: Bounds, rows_now: int, bytes_now: int, rows_in: int, bytes_in: int) -> tuple[int, int]:
    """How far past each bound the spool would be with the incoming rows (≤ 0: within it)."""
    over_rows = rows_now + rows_in - bounds.max_rows if bounds.max_rows is not None else 0
    over_bytes = bytes_now + bytes_in - bounds.max_bytes if bounds.max_bytes is not None else 0
    return over_rows, over_bytes


def rows_to_drop(over_rows: int, over_bytes: int, average_row_bytes: float) -> int:
    by_bytes = math.ceil(over_bytes / max(average_row_bytes, 1.0)) if over_bytes > 0 else 0
    return max(over_rows, by_bytes, 0)
