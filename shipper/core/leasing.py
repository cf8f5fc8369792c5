"""When to lease and how much, as pure functions: replay mode and batch mode, named.

A sink runs in one of two modes. **Replay**: one row per request (the record's own method and path), so the loop
leases `LEASE_AHEAD` rows per slot and sends the next one as soon as a slot frees, without a lease of its own.
**Batch**: many rows per request, so the loop waits until a batch can be full, or its first row has waited
`batch_timeout`, or rows may be waiting that no append announced (at start, after a send: retries and successors),
and then leases one batch. A 413 shrinks the batch limits to half the refused batch.
`take` is how much of the eligible rows one lease hands out, the same for every queue; bundles (several records in
one row) count as their records and go whole only to a sender that takes them whole.
Not responsible for waiting or leasing itself (the forwarder), nor for which rows are eligible (order.py).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from shipper.core.rows import SpoolRow

# Replay mode leases this many rows per slot, so most sends need no lease of their own.
LEASE_AHEAD = 4
# Sends answered and still settling may be this many times the sink's limit: a crash repeats at most
# (1 + SETTLING_ROUNDS) x the limit (see `free_slots`).
SETTLING_ROUNDS = 3
# Rows can also appear without an append in this process (a dead-letter replay from the CLI): look now and then.
IDLE_POLL = 1.0


class Mode(enum.Enum):
    REPLAY = "replay"  # one row per request, leased ahead
    BATCH = "batch"  # many rows per request, leased when a batch is worth sending

    @classmethod
    def of(cls, max_records: int) -> Mode:
        return cls.REPLAY if max_records == 1 else cls.BATCH


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one batch may carry now."""

    records: int
    bytes: int

    def shrunk(self, refused_records: int, refused_bytes: int) -> Limits:
        """After a 413 for a batch this large: at most half of it from now on, never below one."""
        return Limits(
            max(1, min(self.records, refused_records // 2)),
            max(1, min(self.bytes, refused_bytes // 2)),
        )


@dataclass(frozen=True, slots=True)
class Announced:
    """Appends announced since the last lease: how many rows, and when the first came (monotonic seconds)."""

    count: int = 0
    first_at: float | None = None

    def add(self, count: int, now: float) -> Announced:
        return Announced(self.count + count, self.first_at if self.first_at is not None else now)


def wakes(mode: Mode, before: Announced, after: Announced, batch_records: int) -> bool:
    """Whether an append changes the loop's plan: any row in replay mode; a batch's first row, or a full batch."""
    return mode is Mode.REPLAY or before.first_at is None or after.count >= batch_records


def free_slots(limit: int, sending: int, in_flight: int) -> int:
    """Requests the remote may be sent now. A slot frees when its answer comes, not when the queue has recorded it: a
    settlement waits its turn behind ingest's commit (~6 ms on the vendor path, three times the send), so freeing at
    the record capped the rate at limit / (send + settle). Sends answered and still settling are bounded as well, by
    SETTLING_ROUNDS times the limit, because a crash repeats every send whose answer was not recorded: at most
    (1 + SETTLING_ROUNDS) x the limit, ~10 ms of traffic at the vendor path's rate. At 1 round the vendor path
    delivered ~3,300 records/s, at 3 ~4,200 (the same run, 16 slots)."""
    return min(limit - sending, (1 + SETTLING_ROUNDS) * limit - in_flight)


def lease_limit(mode: Mode, slots: int, batch_records: int) -> int:
    """How many rows to lease: enough to keep all of the sink's `slots` busy a while (replay), or one batch. Replay
    leases for every slot, not only those free now: a lease waits its turn behind ingest's commit, and leasing a few
    rows each time a slot freed capped the vendor path at a few rows per turn."""
    return slots * LEASE_AHEAD if mode is Mode.REPLAY else batch_records


@dataclass(frozen=True, slots=True)
class Hold:
    """Do not lease yet: think again after `seconds` or a wake-up. `quiet`: nothing was announced, so if nothing is
    by then, look anyway (rows may have come due or arrived unannounced)."""

    seconds: float
    quiet: bool = False


def batch_hold(
    announced: Announced, backlog: bool, stopping: bool, batch_records: int, batch_timeout: float, now: float
) -> Hold | None:
    """None when a batch may be leased now (it can be full, its first row has waited `batch_timeout`, rows may be
    waiting unannounced, or the loop stops); otherwise how long to hold. Never lease to release: a partial batch
    goes only once its time is up."""
    if backlog or stopping or announced.count >= batch_records:
        return None
    if announced.first_at is None:
        return Hold(IDLE_POLL, quiet=True)
    remaining = announced.first_at + batch_timeout - now
    return None if remaining <= 0 else Hold(remaining)


def idle_wait(next_due: float | None, now: float) -> float:
    """After an empty lease: until the first backing-off row comes due, but no longer than `IDLE_POLL`."""
    return IDLE_POLL if next_due is None else min(IDLE_POLL, max(0.0, next_due - now))


def whole(row: SpoolRow, bundles: bool, limit: int, max_bytes: int) -> bool:
    """Whether a row may leave as it is: a bundle only to a sender that takes bundles, and only if it fits a batch."""
    return row.records == 1 or (bundles and row.records <= limit and len(row.body) <= max_bytes)


def take(
    eligible: Iterable[SpoolRow], limit: int, max_bytes: int, bundles: bool, split: bool = True
) -> tuple[list[SpoolRow], list[int]]:
    """What one lease hands out of the eligible rows (in id order, at most `limit` of them read): up to `limit`
    records and about `max_bytes`, at least one row; and, with `split`, the bundles met that must be split into
    their records first (then the lease looks again, with `split` off)."""
    taken: list[SpoolRow] = []
    too_big: list[int] = []
    size = records = 0
    for row in itertools.islice(eligible, limit):
        if split and not whole(row, bundles, limit, max_bytes):
            too_big.append(row.id)
            continue
        size += len(row.body)
        records += row.records
        if (size > max_bytes or records > limit) and taken:
            break
        taken.append(row)
    return taken, too_big
