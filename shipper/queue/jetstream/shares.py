"""Which partitions a relay should hold, as a pure function of who is alive and who holds what: a fair share each.

With M relays alive and P partitions, no relay holds more than ceil(P / M). A relay holding more gives the excess
back (its highest partitions: a returning relay takes them), and one holding fewer takes free partitions up to its
share, starting at a place that depends on its rank among the members, so relays starting together rarely race for
the same one (a race is settled by the lease's compare-and-set anyway: one create wins). A partition whose lease is
another's is never taken, even if that relay looks dead: its lease expires first (then it is free), so two relays
never hold one partition at once.
Not responsible for the leases themselves (ownership.py).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    take: list[int]  # free partitions to try to lease
    give: list[int]  # held partitions to give back


def share(partitions: int, members: int) -> int:
    return math.ceil(partitions / max(1, members))


def plan(me: str, members: Collection[str], owners: Mapping[int, str], partitions: int) -> Plan:
    """What `me` should do, given the members alive (`me` among them or not) and each leased partition's holder."""
    alive = sorted({*members, me})
    cap = share(partitions, len(alive))
    mine = sorted(p for p, owner in owners.items() if owner == me)
    if len(mine) > cap:
        return Plan([], mine[cap:])
    start = alive.index(me) * cap
    free = [p for p in (*range(start, partitions), *range(min(start, partitions))) if p not in owners]
    return Plan(free[: cap - len(mine)], [])
