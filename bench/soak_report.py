"""The soak's verdict: the ledger of acknowledgements against what the remote logged and what the spool holds.

- lost: acknowledged, never delivered, not dead-lettered. Must be 0.
- dead-lettered: must be exactly the records the remote refused on purpose (every acknowledged one among them).
- per-key order: each key's deliveries follow its acknowledgement order (a repeat of the last one is allowed).
Not responsible for running anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson

from bench.soak_load import Ledger


@dataclass
class Facts:
    """Everything the soak observed, gathered once the daemon and the remote have stopped."""

    seconds: float
    ledger: Ledger
    events: list[tuple[str, int]]  # the remote's log: (D|R|X, uid) in arrival order
    dead_bodies: list[bytes]  # the spool's dead_letters.body
    queued_at_end: int
    drain_seconds: float
    drained: bool
    peak_rss_kib: int
    peak_spool_bytes: int
    graceful_stops: int
    kills: int
    unexpected_exits: list[int]
    bad_exit_codes: list[int]
    faults: dict[str, int] = field(default_factory=dict)  # what the remote did on purpose, by kind
    harness_cpu: float = 0.0  # seconds of CPU the soak's own process used (load, ledger, checks)


@dataclass
class Verdict:
    lines: list[str]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def text(self) -> str:
        result = "PASS" if self.passed else "FAIL: " + "; ".join(self.problems)
        return "\n".join([*self.lines, f"{'result':<28}{result}"])


def order_violations(events: list[tuple[str, int]], acked: dict[int, tuple[str | None, int]]) -> tuple[int, int]:
    """(violations, keys checked): a delivery whose rank is below an earlier delivery's rank for the same key."""
    highest: dict[str, int] = {}
    violations = 0
    for kind, uid in events:
        if kind != "D" or uid not in acked:
            continue
        key, rank = acked[uid]
        if key is None:
            continue
        if rank < highest.get(key, 0):
            violations += 1
        highest[key] = max(highest.get(key, 0), rank)
    return violations, len(highest)


def judge(facts: Facts) -> Verdict:
    ledger = facts.ledger
    taken = Counter(uid for kind, uid in facts.events if kind == "D")
    refused = {uid for kind, uid in facts.events if kind == "R"}
    unreadable = sum(1 for kind, _ in facts.events if kind == "X")
    dead = {int(orjson.loads(body)["soak_uid"]) for body in facts.dead_bodies}
    acked = set(ledger.acked)
    delivered = set(taken)
    lost = acked - delivered - dead
    duplicates = sum(count - 1 for count in taken.values())
    acked_rejects = acked & ledger.marked_reject
    violations, keys = order_violations(facts.events, ledger.acked)
    unacked_delivered = len(delivered & ledger.unacked)
    problems = []
    if lost:
        problems.append(f"{len(lost)} acknowledged record(s) lost (e.g. uid {sorted(lost)[:5]})")
    if dead != refused or not acked_rejects <= dead or not dead <= ledger.marked_reject:
        problems.append(
            f"dead letters ({len(dead)}) differ from the remote's refusals ({len(refused)}; "
            f"{len(acked_rejects - dead)} acknowledged refusal(s) not dead-lettered, "
            f"{len(dead - ledger.marked_reject)} dead-lettered record(s) never meant to be refused)"
        )
    if delivered & ledger.marked_reject:
        problems.append(f"{len(delivered & ledger.marked_reject)} record(s) marked for refusal were taken")
    if violations:
        problems.append(f"{violations} per-key order violation(s)")
    if not facts.drained:
        problems.append(
            f"spool not drained: {facts.queued_at_end} row(s) still queued after {facts.drain_seconds:.0f}s"
        )
    if facts.unexpected_exits:
        problems.append(f"shipper exited on its own {len(facts.unexpected_exits)} time(s): {facts.unexpected_exits}")
    if facts.bad_exit_codes:
        problems.append(f"a graceful stop exited with {facts.bad_exit_codes}")
    if unreadable:
        problems.append(f"the remote got {unreadable} request(s) without a soak_uid")
    failures = ", ".join(f"{why} x{n}" for why, n in ledger.failures.most_common()) or "none"
    faults = ", ".join(f"{kind} x{n}" for kind, n in facts.faults.items() if n) or "none"

    def row(label: str, value: object) -> str:
        return f"{label:<28}{value}"

    lines = [
        f"soak: {facts.seconds:g} s of load; {ledger.sent} records sent",
        row("records acknowledged", f"{len(acked)} ({len(acked) - ledger.vendor_rank} native, "
            f"{ledger.vendor_rank} Freeplay drop-in)"),
        row("delivered (distinct)", f"{len(delivered & acked)} of the acknowledged (and {unacked_delivered} never "
            "acknowledged: sent as the daemon went down)"),
        row("duplicates", f"{duplicates} (redeliveries after a timeout, reset or kill -9: at-least-once)"),
        row("lost", len(lost)),
        row("dead-lettered", f"{len(dead)} (refused on purpose by the remote: {len(refused)}; acknowledged among "
            f"them: {len(acked_rejects)})"),
        row("per-key order", f"{violations} violation(s) over {keys} keys"),
        row("not acknowledged", f"{len(ledger.unacked)} records ({failures})"),
        row("remote faults injected", faults),
        row("restarts", f"{facts.graceful_stops + facts.kills} ({facts.graceful_stops} SIGTERM, "
            f"{facts.kills} kill -9)"),
        row("peak RSS (daemon, VmHWM)", f"{facts.peak_rss_kib / 1024:.1f} MiB"),
        row("peak spool size", f"{facts.peak_spool_bytes / 1024 / 1024:.1f} MiB (spool.db + -wal + -shm)"),
        row("drain after load", f"{facts.drain_seconds:.1f} s, {facts.queued_at_end} row(s) left"),
        row("load generator CPU", f"{facts.harness_cpu:.1f} s ({100 * facts.harness_cpu / facts.seconds:.0f} % of "
            "one core; the remote runs in its own process)"),
    ]  # fmt: skip
    return Verdict(lines, problems)
