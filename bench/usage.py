"""CPU accounting from /proc: how much each of our processes used, and how much everything else on the host did.

`cpu_other_pct` is the honest-noise figure: on a shared 2-core machine, anything above a few percent means some
other work (a test suite, another daemon) competed with the daemon during the window.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all threads (the spool's database thread included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_busy_seconds() -> float:
    """CPU time the whole host spent not idle, summed over cores (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass(frozen=True)
class Snapshot:
    at: float
    processes: dict[str, float]
    host: float


def snapshot(pids: dict[str, list[int]], at: float) -> Snapshot:
    """CPU used so far by each named group of processes (the daemon: all of its processes)."""
    return Snapshot(at, {name: sum(map(cpu_seconds, group)) for name, group in pids.items()}, host_busy_seconds())


def percentages(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU per process and for everything else, each as % of one core over the interval."""
    seconds = after.at - before.at
    used = {name: after.processes[name] - spent for name, spent in before.processes.items()}
    out = {f"cpu_{name}_pct": 100 * value / seconds for name, value in used.items()}
    out["cpu_other_pct"] = max(0.0, 100 * (after.host - before.host - sum(used.values())) / seconds)
    return out


async def wait_for_quiet(budget: float, threshold_pct: float = 25.0, sample: float = 0.5) -> float:
    """Wait while the host is busier than `threshold_pct` of one core (we are idle here, so that is others' work).

    Spends at most `budget` seconds; returns what is left of it, so one budget can cover a whole run.
    """
    while budget > 0:
        before = host_busy_seconds()
        await asyncio.sleep(sample)
        budget -= sample
        if 100 * (host_busy_seconds() - before) / sample < threshold_pct:
            break
    return max(0.0, budget)
