"""What ingest counts as it goes: records committed per sink, requests refused per reason, records dropped.

Plain counters the request path bumps without a lock; the metrics collector (metrics.py) reads them at scrape time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestCounters:
    received: Counter[str] = field(default_factory=Counter)  # sink → records committed
    rejected: Counter[str] = field(default_factory=Counter)  # reason → requests refused
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sink, reason) → records dropped
    spool_recoveries: int = 0  # damaged spools moved aside at start
    otlp: Counter[tuple[str, str]] = field(default_factory=Counter)  # (signal, outcome) → spans or log records
