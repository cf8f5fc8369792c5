"""The ordering rule has one statement (shipper/core/order.py) and two implementations that must agree.

Random histories (appends with keys, scopes, `after` and kinds, and bundles of loose records; leases by senders
that take bundles whole or not; deliveries; retries now or later; dead letters; releases; bundles refused whole;
restarts) run through the in-memory queue, which calls the pure rule, and through the real
SQLite spool, whose SQL implements it. At every lease both hand out the same rows (ids, attempts, inherited scopes),
and at the end both hold the same queue and the same dead letters with the same reasons.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shipper.core.rows import DeadLetter, Retry, SpoolRow
from shipper.queue.memory import MemoryQueue
from shipper.records import NewRow
from shipper.spool import Spool
from tests.support import query_spool

SINKS = ("a", "b")
# Few names, so that histories often share keys and scopes: that is where the rule has something to decide.
KEYS = ("k1", "k2")
SCOPES = ("s1", "s2")
LATER = 1e12  # a retry that will not come due within the test


@dataclass(frozen=True)
class Spec:
    sink: str
    key: str | None
    scope: str | None
    after: str | None
    kind: str | None
    records: int = 1  # a bundle's, where the spec is loose (no key, scope, after or kind)

    @property
    def size(self) -> int:
        loose = self.key is None and self.scope is None and self.after is None and self.kind is None
        return self.records if loose else 1

    def row(self, n: int) -> NewRow:
        """The record(s) numbered n, n+1, ...: a bundle's bodies joined by newlines, as sinks/bundling.py makes it."""
        body = b"\n".join(orjson.dumps({"n": n + i}) for i in range(self.size))
        return NewRow(self.sink, "POST", "/x", None, body, self.key, self.scope, self.after, self.kind, None, self.size)


specs = st.builds(
    Spec,
    st.sampled_from(SINKS),
    st.sampled_from((*KEYS, None)),
    st.sampled_from((*SCOPES, None)),
    st.sampled_from((*KEYS, *SCOPES, None, None, None)),
    st.sampled_from(("create", "update", None)),
    st.sampled_from((1, 1, 2, 3)),
)
picks = st.lists(st.integers(0, 7), min_size=1, max_size=4)
appends = st.tuples(st.just("append"), st.lists(specs, min_size=1, max_size=6))
leases = st.tuples(st.just("lease"), st.sampled_from(SINKS), st.integers(1, 6), st.booleans())
settlements = st.one_of(
    st.tuples(st.just("dead"), picks),
    st.tuples(st.just("deliver"), picks),
    st.tuples(st.just("retry"), picks, st.booleans()),
    st.tuples(st.just("release"), picks),
    st.tuples(st.just("unbundle"), picks),
)
# A history is rounds of what the daemon does (append, lease, settle), now and then a restart, so that rows
# often reach each state before younger kin arrive.
rounds = st.tuples(appends, leases, settlements) | st.tuples(st.tuples(st.just("restart")))
histories = st.lists(rounds, min_size=2, max_size=14).map(lambda rs: [op for r in rs for op in r])


def view(row: SpoolRow) -> tuple[Any, ...]:
    """What both must agree on (created_at is each one's own clock reading)."""
    body = [orjson.loads(line)["n"] for line in row.body.split(b"\n")]
    return (row.id, row.sink, row.key, row.scope, row.after, row.kind, row.attempts, row.unanswered, row.records, body)


class Both:
    def __init__(self, path: Path, spool: Spool) -> None:
        self.path = path
        self.spool = spool
        self.memory = MemoryQueue()
        self.leased: list[int] = []
        self.n = 0

    def chosen(self, picks: list[int]) -> list[int]:
        if not self.leased:
            return []
        ids = sorted({self.leased[i % len(self.leased)] for i in picks})
        self.leased = [i for i in self.leased if i not in ids]
        return ids

    async def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "append":
            rows = []
            for spec in op[1]:
                rows.append(spec.row(self.n + 1))
                self.n += spec.size
            assert await self.spool.append(rows) == await self.memory.append(rows)
        elif kind == "lease":
            spooled = await self.spool.lease(op[1], op[2], bundles=op[3])
            modelled = await self.memory.lease(op[1], op[2], bundles=op[3])
            assert [view(r) for r in spooled.rows] == [view(r) for r in modelled.rows], op
            self.leased += [r.id for r in spooled.rows]
        elif kind == "restart":
            await self.spool.close()
            self.spool = await Spool.open(self.path, "os")
            self.memory.recover()
            self.leased = []
        else:
            await self.settle(kind, op)

    async def settle(self, kind: str, op: tuple[Any, ...]) -> None:
        ids = self.chosen(op[1])
        if not ids:
            return
        if kind == "deliver":
            arguments: dict[str, Any] = {"delivered": ids}
        elif kind == "retry":
            arguments = {"retry": [Retry(i, 0.0 if op[2] else LATER, "timeout", unanswered=op[2]) for i in ids]}
        elif kind == "dead":
            arguments = {"dead": [DeadLetter(i, 400, "bad", "rejected by the remote: HTTP 400") for i in ids]}
        elif kind == "unbundle":
            arguments = {"unbundled": ids}
        else:
            arguments = {"released": ids}
        await self.spool.settle(**arguments)
        await self.memory.settle(**arguments)

    def compare_final(self) -> None:
        sql = "SELECT id, sink, key, scope, after, kind, attempts, unanswered, records, body FROM rows ORDER BY id"
        queued = query_spool(self.path, sql)
        modelled = [
            (r.id, r.sink, r.key, r.scope, r.after, r.kind, r.attempts, r.unanswered, r.records, r.body)
            for r in self.memory.rows.values()
        ]
        assert queued == modelled
        sql = "SELECT id, sink, key, scope, kind, attempts, status, reason FROM dead_letters ORDER BY id"
        dead = query_spool(self.path, sql)
        expected = [
            (d.row.id, d.row.sink, d.row.key, d.row.scope, d.row.kind, d.row.attempts, d.status, d.reason)
            for d in sorted(self.memory.dead.values(), key=lambda d: d.row.id)
        ]
        assert dead == expected


async def run_history(history: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "spool.db"
        both = Both(path, await Spool.open(path, "os"))
        try:
            for op in history:
                await both.apply(op)
            for sink in SINKS:  # a last look at what each would hand out now
                await both.apply(("lease", sink, 100, True))
        finally:
            await both.spool.close()
        both.compare_final()


# Found by this test: the spool's scope cache took the latest create's scope where its table keeps the first.
TWO_CREATES_ONE_KEY = [
    ("append", [Spec("a", "k1", "s1", None, "create"), Spec("a", "k1", "s2", None, "create")]),
    ("append", [Spec("a", "k1", None, None, "update")]),
    ("lease", "a", 1, False),
]

# And: a create dead on arrival was not yet dead for the rows after it in the same batch.
DEAD_ON_ARRIVAL_IN_ONE_BATCH = [
    ("append", [Spec("b", "k2", None, None, "create")]),
    ("lease", "b", 1, False),
    ("dead", [0]),
    ("append", [Spec("b", "k1", None, "k2", "create"), Spec("b", None, None, "k1", None)]),
]

# And: the in-memory queue named the dead create that died first, not the oldest, where a key has two (the younger
# died on arrival, its `after` dead already; the older later).
TWO_DEAD_CREATES_ONE_KEY = [
    ("append", [Spec("b", "k1", None, None, "create")]),
    ("lease", "b", 1, False),
    ("dead", [0]),
    ("append", [Spec("b", "k2", None, None, "create"), Spec("b", "k2", None, "k1", "create")]),
    ("lease", "b", 1, False),
    ("dead", [0]),
    ("append", [Spec("b", None, None, "k2", None)]),
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(TWO_CREATES_ONE_KEY)
@example(DEAD_ON_ARRIVAL_IN_ONE_BATCH)
@example(TWO_DEAD_CREATES_ONE_KEY)
@given(histories)
def test_the_spool_and_the_pure_rule_choose_the_same_rows_and_dead_letter_the_same_rows(
    history: list[tuple[Any, ...]],
) -> None:
    asyncio.run(run_history(history))
