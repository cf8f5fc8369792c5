"""The durable queue: one writer task owns the write connection and commits operations in groups.

Ingest appends, forwarder leases and settlements all queue up for the writer; it runs whatever has gathered in one
transaction (one fsync) and then answers every waiter. That is group commit: an acknowledgement is durable yet cheap.
A row is eligible only while no older row shares its key (per-entity order) and, when it names an `after`, no older
row has that key or scope (an update waits for its create, session metadata for the session's rows). A dead create
takes its dependants with it. Not responsible for retry decisions (core/decide.py) or reporting (stats.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from shipper.core.rows import DeadLetter, Lease, Retry, Settlement, SpoolRow
from shipper.errors import DiskFull, SpoolError
from shipper.logs import Throttled
from shipper.records import NewRow
from shipper.spool import sql
from shipper.spool.bounds import Bounds
from shipper.spool.claim import Claim
from shipper.spool.group import GroupWriter, Op, Outcome, Read, environmental, failure
from shipper.spool.inserts import one
from shipper.spool.owners import Presence, reclaim_dead
from shipper.spool.schema import apply_pragmas, check_current, page_size
from shipper.spool.thread import DatabaseThread
from shipper.spool.turns import Turns

log = logging.getLogger(__name__)

# Told once if the writer dies: the owner should stop, so a supervisor restarts it.
DeathHook = Callable[[BaseException], None] | None
MAX_GROUP_OPS = 2048
QUEUE_DEPTH = 8192


class Spool:
    """Async facade over the spool file; create with `await Spool.open(...)`, end with `await close()`."""

    def __init__(
        self,
        db: DatabaseThread,
        presence: Presence,
        path: Path,
        bounds: Bounds,
        writer: GroupWriter,
        on_death: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.path = path
        self.recovered_from: Path | None = None
        # Why the writer died (then every write fails until a restart); None while it runs.
        self.failure: BaseException | None = None
        # Set when a group holding appends failed for want of space, cleared when an append commits again.
        self.disk_full: DiskFull | None = None
        self.owner = presence.name  # the name on every lease this process takes
        self._on_death = on_death
        self._group: list[Op] = []
        self._db = db
        self._presence = presence
        self._claim: Claim | None = None
        self._on_drop = bounds.on_drop
        self._group_writer = writer
        self._queue: asyncio.Queue[Op | None] = asyncio.Queue(QUEUE_DEPTH)
        self._watchers: dict[str, Callable[[int], None]] = {}
        self._on_added: Callable[[Counter[str]], None] | None = None
        self._credentials: dict[int, str] = {}
        self._upstream: dict[tuple[str, str], str] = {}
        self._failure_log = Throttled(log, 10.0)
        self._writer = asyncio.create_task(self._run_writer(), name="spool-writer")

    @classmethod
    async def open(
        cls,
        path: Path,
        durability: str = "fsync",
        lease_timeout: float = 300.0,
        bounds: Bounds | None = None,
        on_death: Callable[[BaseException], None] | None = None,
    ) -> Spool:
        """The spool of a shipper that is alone on it: claimed (locked, checked, migrated, dead leases given back),
        then attached. `on_death` is called once if the writer ever dies: the owner should stop, so a supervisor
        restarts it."""
        claim = Claim.take(path, durability)
        return await cls._claimed(claim, path, durability, lease_timeout, bounds, on_death, "daemon")

    @classmethod
    async def join(
        cls,
        path: Path,
        durability: str = "fsync",
        lease_timeout: float = 300.0,
        bounds: Bounds | None = None,
        on_death: DeathHook = None,
        role: str = "daemon",
    ) -> Spool:
        """A role alone (no supervisor) on a spool other roles alone may share: claimed shared (Claim.share)."""
        claim = await asyncio.to_thread(Claim.share, path, durability)
        return await cls._claimed(claim, path, durability, lease_timeout, bounds, on_death, role)

    @classmethod
    async def _claimed(
        cls,
        claim: Claim,
        path: Path,
        durability: str,
        lease_timeout: float,
        bounds: Bounds | None,
        on_death: DeathHook,
        role: str,
    ) -> Spool:
        """Attached under a claim this process holds (and gives up when it closes)."""
        try:
            spool = await cls.attach(path, durability, lease_timeout, bounds, on_death, role)
        except BaseException:
            claim.release()
            raise
        spool._claim = claim
        spool.recovered_from = claim.recovered_from
        return spool

    @classmethod
    async def attach(
        cls,
        path: Path,
        durability: str = "fsync",
        lease_timeout: float = 300.0,
        bounds: Bounds | None = None,
        on_death: Callable[[BaseException], None] | None = None,
        role: str = "daemon",
    ) -> Spool:
        """A spool some process of this shipper has claimed (see Claim): one of several processes writing to it."""
        presence = Presence.take(path, role)
        try:
            db = await DatabaseThread.open(path)
            try:

                def start(conn: sqlite3.Connection) -> int:
                    apply_pragmas(conn, durability)
                    check_current(conn, path)
                    return page_size(conn)

                size = await db.run(start)
            except BaseException:
                await db.close()
                raise
        except BaseException:
            presence.close()
            raise
        bounds = bounds or Bounds()
        writer = GroupWriter(bounds, size, durability, lease_timeout, presence.name, Turns(path))
        return cls(db, presence, path, bounds, writer, on_death)

    def watch(self, sink: str, callback: Callable[[int], None]) -> None:
        """Call `callback(count)` after each commit that adds rows for `sink` (the forwarder's wake-up)."""
        self._watchers[sink] = callback

    def on_added(self, callback: Callable[[Counter[str]], None]) -> None:
        """Call `callback(counts per sink)` after each commit that adds rows: how other processes hear of them."""
        self._on_added = callback

    def announce(self, counts: dict[str, int]) -> None:
        """Rows another process added: wake this process's watchers as if they were added here."""
        for sink, count in counts.items():
            callback = self._watchers.get(sink)
            if callback is not None:
                callback(count)

    async def append(self, rows: Sequence[NewRow]) -> list[int]:
        """Durably add rows; returns their ids once committed."""
        result: list[int] = await self._submit(Op(self._future(), append=rows))
        return result

    async def bury(self, dead: Sequence[tuple[SpoolRow, DeadLetter]]) -> list[int]:
        """Dead letters of rows that came from elsewhere (a relay's messages), fsynced like an append: the ids they
        are known by (`shipper dlq show ID`), once they would survive a power cut."""
        result: list[int] = await self._submit(Op(self._future(), bury=dead))
        return result

    async def lease(self, sink: str, limit: int, max_bytes: int = 1 << 62, bundles: bool = False) -> Lease:
        result: Lease = await self._submit(Op(self._future(), lease=(sink, limit, max_bytes, bundles)))
        return result

    async def settle(
        self,
        delivered: Iterable[int] = (),
        retry: Iterable[Retry] = (),
        dead: Iterable[DeadLetter] = (),
        released: Iterable[int] = (),
        learned: Iterable[tuple[str, str, str]] = (),
        unbundled: Iterable[int] = (),
    ) -> None:
        settlement = Settlement(
            list(delivered), list(retry), list(dead), list(released), list(learned), list(unbundled)
        )
        await self._submit(Op(self._future(), settle=settlement))

    async def credential(self, credential_id: int) -> str | None:
        """The API key stored for rows that carry `credential_id` (cached: keys never change)."""
        if credential_id not in self._credentials:
            query = "SELECT value FROM credentials WHERE id = ?"
            found = await self._read(lambda conn: one(conn, query, (credential_id,)))
            if found is not None:
                self._credentials[credential_id] = found
        return self._credentials.get(credential_id)

    async def upstream_id(self, sink: str, local: str) -> str | None:
        """The remote's id for an id shipper made up for the app, once a delivered create taught it."""
        if (sink, local) not in self._upstream:
            query = "SELECT upstream FROM id_map WHERE sink = ? AND local = ?"
            found = await self._read(lambda conn: one(conn, query, (sink, local)))
            if found is not None:
                self._upstream[(sink, local)] = found
        return self._upstream.get((sink, local))

    async def keyed(self, sink: str, key: str, kind: str) -> list[tuple[int, bytes]]:
        """(id, body) of the queued rows of `sink` with this key and kind, in id order (never cached: they change)."""
        found: list[tuple[int, bytes]] = await self._read(
            lambda conn: conn.execute(sql.KEYED_KIND, (sink, key, kind)).fetchall()
        )
        return found

    async def give_back_dead(self) -> int:
        """Leases of processes that died, back to the queue now (not at their deadline); wakes the watchers when any
        came back. Returns how many."""
        given: int = await self._submit(Op(self._future(), read=lambda conn: reclaim_dead(conn, self.path)))
        if given:
            self.announce(dict.fromkeys(self._watchers, given))
        return given

    async def ping(self) -> None:
        """Prove the spool takes a write: an empty write transaction through the group-commit writer."""
        await self._submit(Op(self._future()))

    async def close(self) -> None:
        if not self._writer.done():
            await self._queue.put(None)
            await self._writer
        await self._db.close()
        self._group_writer.close()
        self._presence.close()
        if self._claim is not None:
            self._claim.release()

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _read(self, read: Read) -> Any:
        """A read in the writer's order: it sees every commit acknowledged before it."""
        return await self._submit(Op(self._future(), read=read))

    async def _submit(self, op: Op) -> Any:
        if self._writer.done():
            raise SpoolError("the spool is closed")
        if self.failure is not None:
            raise SpoolError(f"the spool writer died: {self.failure!r}")
        await self._queue.put(op)
        return await op.future

    async def _run_writer(self) -> None:
        """Commit groups until close. Should this loop ever fail (a bug: one group's content only ever fails its own
        ops, see `_commit`), every waiter still gets an answer, now and until close, and `on_death` is told."""
        try:
            await self._write_groups()
        except Exception as exc:
            self.failure = exc
            log.critical("the spool writer died; every write now fails until a restart: %r", exc, exc_info=exc)
            self._fail(self._group, SpoolError(f"the spool writer died: {exc!r}"))
            if self._on_death is not None:
                self._on_death(exc)
            await self._refuse_until_closed()

    async def _write_groups(self) -> None:
        while True:
            first = await self._queue.get()
            group: list[Op] = []
            stop = first is None
            if first is not None:
                group.append(first)
            while not stop and len(group) < MAX_GROUP_OPS and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                else:
                    group.append(op)
            if group:
                self._group = group
                await self._commit(group)
                self._group = []
            if stop:
                return

    async def _refuse_until_closed(self) -> None:
        error = SpoolError("the spool writer died; see the log")
        while (op := await self._queue.get()) is not None:
            self._fail([op], error)

    @staticmethod
    def _fail(ops: Iterable[Op], error: BaseException) -> None:
        for op in ops:
            if not op.future.done():
                op.future.set_exception(error)

    async def _commit(self, group: list[Op]) -> None:
        """One transaction for the group. A failure of the spool itself (disk full, I/O) fails the whole group; any
        other error came from some op's content, so the group is split in halves until the ops at fault stand alone:
        a failing op fails its own request only."""
        try:
            outcome = await self._db.run(lambda conn: self._group_writer.commit(conn, group))
        except Exception as exc:
            if environmental(exc):
                self._failure_log.warning("spool commit failed: %s", exc)
                error = failure(exc)
                self._fail(group, error)
                if isinstance(error, DiskFull) and any(op.append for op in group):
                    self.disk_full = error
            elif len(group) > 1:
                half = len(group) // 2
                await self._commit(group[:half])
                await self._commit(group[half:])
            else:
                self._failure_log.warning("a spool operation failed and was refused alone: %r", exc)
                self._fail(group, SpoolError(f"internal error: {type(exc).__name__}"))
            return
        self._publish(group, outcome)

    def _publish(self, group: list[Op], outcome: Outcome) -> None:
        """Answer every op of a committed group, then tell the forwarders what was added."""
        if outcome.dropped and self._on_drop is not None:
            self._on_drop(outcome.dropped)
        self._upstream.update({(sink, local): upstream for sink, local, upstream in outcome.learned})
        added: Counter[str] = Counter()
        for op, result in zip(group, outcome.results, strict=True):
            if op.future.done():
                continue
            if isinstance(result, SpoolError):
                op.future.set_exception(result)
                continue
            op.future.set_result(result)
            if op.append:
                for row in op.append:
                    added[row.sink] += row.records
        if added:
            self.disk_full = None
        if added:
            self.announce(added)
            if self._on_added is not None:
                self._on_added(added)
