"""An in-memory queue that follows the ordering rule (core/order.py) with the spool's interface, for tests.

It answers append, lease, settle and the lookups exactly as the SQLite spool does (the property test in
tests/integration/test_order_model.py holds the two to the same choices), so the forwarder, the fleet and the
sinks can be tested in process, fast, with an injected clock. Nothing in it is durable: it is never used by the
daemon. Not responsible for bounds (`max_bytes`, `drop_oldest`) or for the dead-letter CLI.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shipper.core import order
from shipper.core.leasing import take
from shipper.core.rows import DeadLetter, Lease, Retry, Settlement, SpoolRow
from shipper.errors import DiskFull, SpoolError
from shipper.records import NewRow


@dataclass(frozen=True, slots=True)
class Dead:
    """A dead letter as the queue keeps it: the row, and what the remote (or the rule) said."""

    row: SpoolRow
    status: int | None
    response: str | None
    reason: str


class MemoryQueue:
    def __init__(self, clock: Callable[[], float] = time.time, lease_timeout: float = 300.0) -> None:
        self.rows: dict[int, SpoolRow] = {}  # queued, in id order (insertion order is id order)
        self.dead: dict[int, Dead] = {}
        self._due: dict[int, float] = {}
        self._leased_until: dict[int, float] = {}
        self._scopes: dict[tuple[str, str], str] = {}
        self._credentials: dict[tuple[str, str], int] = {}  # (sink, key) -> id, one per distinct key as stored
        self._upstream: dict[tuple[str, str], str] = {}
        self._watchers: dict[str, Callable[[int], None]] = {}
        self._next_id = 1
        self._clock = clock
        self._lease_timeout = lease_timeout
        self.path = Path(".")  # where a file would be: nothing is written there
        self.failure: BaseException | None = None
        self.disk_full: DiskFull | None = None
        self.refuse_settle: SpoolError | None = None  # while set, `settle` raises it, as a spool on a full disk does

    # -- the spool's interface ------------------------------------------------------------------------------------

    def watch(self, sink: str, callback: Callable[[int], None]) -> None:
        self._watchers[sink] = callback

    async def append(self, rows: Sequence[NewRow]) -> list[int]:
        ids = [record_id for row in rows for record_id in self._insert(row)]
        counts: Counter[str] = Counter()
        for row in rows:
            counts[row.sink] += row.records
        for sink, count in counts.items():
            if sink in self._watchers:
                self._watchers[sink](count)
        await asyncio.sleep(0)  # an append is answered after a hop, as the spool's is
        return ids

    async def lease(self, sink: str, limit: int, max_bytes: int = 1 << 62, bundles: bool = False) -> Lease:
        now = self._clock()
        taken, too_big = take(self._eligible(sink, now), limit, max_bytes, bundles)
        if too_big:
            self._unbundle(too_big)
            taken, _ = take(self._eligible(sink, now), limit, max_bytes, bundles, split=False)
        taken = [row._replace(attempts=row.attempts + 1) for row in taken]
        for row in taken:
            self._leased_until[row.id] = now + self._lease_timeout
        later = [due for row_id, due in self._due.items() if due > now and self.rows[row_id].sink == sink]
        return Lease(taken, min(later) if later and len(taken) < limit else None)

    async def settle(
        self,
        delivered: Iterable[int] = (),
        retry: Iterable[Retry] = (),
        dead: Iterable[DeadLetter] = (),
        released: Iterable[int] = (),
        learned: Iterable[tuple[str, str, str]] = (),
        unbundled: Iterable[int] = (),
    ) -> None:
        if self.refuse_settle is not None:
            raise self.refuse_settle
        s = Settlement(list(delivered), list(retry), list(dead), list(released), list(learned), list(unbundled))
        self._unbundle(s.unbundled)
        self._upstream.update({(sink, local): upstream for sink, local, upstream in s.learned})
        if s.dead:
            self._dead_letter(s.dead)
        for row_id in s.delivered:
            self._remove(row_id)
        for r in s.retry:
            if r.id in self.rows:
                row = self.rows[r.id]
                self.rows[r.id] = row._replace(attempts=row.attempts + 1, unanswered=row.unanswered + r.unanswered)
                self._due[r.id] = r.next_attempt_at
        for row_id in s.delivered + [d.id for d in s.dead] + [r.id for r in s.retry] + s.released + s.unbundled:
            self._leased_until.pop(row_id, None)

    async def credential(self, credential_id: int) -> str | None:
        return next((key for (_, key), known in self._credentials.items() if known == credential_id), None)

    async def upstream_id(self, sink: str, local: str) -> str | None:
        return self._upstream.get((sink, local))

    async def keyed(self, sink: str, key: str, kind: str) -> list[tuple[int, bytes]]:
        return [(r.id, r.body) for r in self.rows.values() if (r.sink, r.key, r.kind) == (sink, key, kind)]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def recover(self) -> None:
        """What opening the spool after a crash does: every lease was a dead sender's, and counts as an attempt
        that the remote may have taken."""
        for row_id in self._leased_until:
            if row_id in self.rows:
                row = self.rows[row_id]
                self.rows[row_id] = row._replace(attempts=row.attempts + 1, unanswered=row.unanswered + 1)
        self._leased_until.clear()

    # -- the rule applied -----------------------------------------------------------------------------------------

    def _eligible(self, sink: str, now: float) -> Iterator[SpoolRow]:
        return (self.rows[w.id] for w in order.eligible(self._waiting(sink), lambda w: self._free(w.id, now)))

    def _waiting(self, sink: str) -> Iterable[order.Waiting]:
        return (order.Waiting(r.id, r.key, r.scope, r.after, r.kind) for r in self.rows.values() if r.sink == sink)

    def _free(self, row_id: int, now: float) -> bool:
        return self._due.get(row_id, 0.0) <= now and self._leased_until.get(row_id, 0.0) <= now

    def _insert(self, new: NewRow) -> range:
        """The ids of the row's records: a bundle of n takes n ids, as the spool's do."""
        row_id, self._next_id = self._next_id, self._next_id + new.records
        scope = order.inherited_scope(new.kind, new.key, new.scope, self._entity_scope(new.sink, new.key))
        credential = None if new.credential is None else self._credentials.setdefault(
            (new.sink, new.credential), len(self._credentials) + 1
        )  # fmt: skip
        row = SpoolRow(row_id, new.sink, new.key, new.method, new.path, new.query, new.body, self._clock(), 0,
                       scope, new.after, new.kind, credential, new.records)  # fmt: skip
        died = order.dead_on_arrival(new.kind, new.key, new.after, self._dead_creates(new.sink))
        if died is None:
            self.rows[row_id] = row
            if new.due > 0:
                self._due[row_id] = new.due
        else:
            self.dead[row_id] = Dead(row, None, None, order.reason(died, self.dead[died].row.key))
        if order.remembers_scope(new.kind, new.key, scope) and new.key is not None and scope is not None:
            self._scopes.setdefault((new.sink, new.key), scope)
        return range(row_id, self._next_id)

    def _unbundle(self, ids: Iterable[int]) -> None:
        """Bundles back as their records, under the ids they were given, in id order (spool/bundles.py)."""
        split = False
        for row_id in ids:
            row = self.rows.get(row_id)
            if row is None or row.records == 1:
                continue
            split = True
            for i, body in enumerate(row.body.split(b"\n")):
                self.rows[row_id + i] = row._replace(id=row_id + i, body=body, records=1)
                if row_id in self._due:
                    self._due[row_id + i] = self._due[row_id]
        if split:  # the records went in after every later row: put them back in id order (rare: only on a split)
            self.rows = dict(sorted(self.rows.items()))

    def _entity_scope(self, sink: str, key: str | None) -> str | None:
        return None if key is None else self._scopes.get((sink, key))

    def _dead_creates(self, sink: str) -> dict[str, int]:
        oldest: dict[str, int] = {}
        for d in self.dead.values():  # in the order they died, which is not always the order of their ids
            if d.row.sink == sink and d.row.kind == "create" and d.row.key is not None:
                oldest[d.row.key] = min(d.row.id, oldest.get(d.row.key, d.row.id))
        return oldest

    def _dead_letter(self, dead: list[DeadLetter]) -> None:
        for d in dead:  # the ones the sender tried: their attempt ended
            if d.id in self.rows:
                self.rows[d.id] = self.rows[d.id]._replace(attempts=self.rows[d.id].attempts + 1)
        batch = {d.id: d for d in dead if d.id in self.rows}
        while batch:
            creates = sorted((self.rows[i] for i in batch), key=lambda r: r.id)
            for d in batch.values():
                self.dead[d.id] = Dead(self.rows[d.id], d.status, d.response, d.reason)
                self._remove(d.id)
            following: dict[int, DeadLetter] = {}
            for create in creates:
                waiting = order.Waiting(create.id, create.key, create.scope, create.after, create.kind)
                for row in order.dependants(waiting, self._waiting(create.sink)):
                    following[row.id] = DeadLetter(row.id, None, None, order.reason(create.id, create.key))
            batch = following

    def _remove(self, row_id: int) -> None:
        self.rows.pop(row_id, None)
        self._due.pop(row_id, None)
