"""How many cores this process may really use: what `[daemon] ingest_workers = "auto"` sizes the processes by.

`os.cpu_count()` is the machine's count, which in a container is the node's (64 on a big node for a sidecar given
half a core). The cores the process may run on (its CPU affinity, which cpusets set) and the cgroup's CPU quota
(`cpu.max`, which a Kubernetes or Docker CPU limit sets) bound it; the smallest of the three counts.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" in µs, or "max <period>"


def usable_cores(cpu_max: Path = CPU_MAX) -> int:
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        quota, period = "max", "1"
    if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
        counts.append(max(1, math.ceil(int(quota) / int(period))))
    return max(1, min(counts))
