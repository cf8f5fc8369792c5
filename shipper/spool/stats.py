"""What `shipper status` and /metrics show of a spool file: per-sink counts and the file's size.

Read through the spool's reader (reader.py), safe while the daemon runs. Not responsible for anything that writes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipper.spool.reader import QueueCounts, SpoolReader, read


@dataclass(frozen=True, slots=True)
class SinkStats:
    sink: str
    queued: int
    leased: int
    retrying: int
    dead_lettered: int
    oldest_age: float | None  # seconds since the oldest queued row was acknowledged


@dataclass(frozen=True, slots=True)
class SpoolStats:
    path: str
    file_bytes: int
    sinks: list[SinkStats]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_bytes(path: Path) -> int:
    """The database plus its WAL: what the spool really occupies."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


def queued_by_sink(path: Path) -> dict[str, int]:
    """Rows waiting per sink, and nothing else: cheap enough for the daemon's stop line on a large backlog."""
    return read(path, SpoolReader.waiting_by_sink)


def read_stats(path: Path, sinks: list[str], now: float | None = None) -> SpoolStats:
    """Per-sink counts for every configured sink and any sink still holding rows."""
    at = time.time() if now is None else now
    queue, dead = read(path, lambda spool: (spool.queue_counts(at), spool.dead_by_sink()))
    idle = QueueCounts(0, 0, 0, None)
    result = []
    for name in sorted(set(sinks) | set(queue) | set(dead)):
        counts = queue.get(name, idle)
        oldest = counts.oldest_created_at
        result.append(
            SinkStats(
                sink=name,
                queued=counts.queued,
                leased=counts.leased,
                retrying=counts.retrying,
                dead_lettered=dead.get(name, 0),
                oldest_age=None if oldest is None else max(0.0, at - oldest),
            )
        )
    return SpoolStats(path=str(path), file_bytes=file_bytes(path), sinks=result)
