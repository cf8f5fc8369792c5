"""Render spool statistics for people (a table) or scripts (JSON). Not responsible for gathering them."""

from __future__ import annotations

from shipper.spool.stats import SpoolStats


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render_table(stats: SpoolStats) -> str:
    header = ("SINK", "QUEUED", "LEASED", "RETRYING", "DEAD", "OLDEST")
    rows = [
        (s.sink, str(s.queued), str(s.leased), str(s.retrying), str(s.dead_lettered), human_age(s.oldest_age))
        for s in stats.sinks
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    ]
    lines.append(f"spool {stats.path}: {human_bytes(stats.file_bytes)}")
    return "\n".join(lines)
