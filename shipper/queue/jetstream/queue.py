"""A relay's queue: the rows a forwarder leases are messages pulled from the stream's partitions, and a row's
outcome is the message's acknowledgement. It implements the queue seam's Leaser and Lookups (queue/base.py), so the
relay runs the very forwarders and sinks a sidecar runs.

- **Acked only after the vendor took it.** `settle(delivered)` acknowledges the message (ack_sync: the stream
  confirmed it); `settle(dead)` writes the dead letter to the relay's own spool file first (`shipper dlq` works where
  the relay runs), then acknowledges. Nothing is acknowledged on receipt.
- **Retries are held, not nak'ed.** A retry keeps its message here, due at the time the backoff (or Retry-After)
  gives, and every held message gets an in_progress() every ack_wait / 3, as does one whose vendor call is slow. A
  nak(delay) would hand the timing to the stream and let the relay forget the message, but then nothing would hold
  back the later messages of its key, which the stream goes on handing out: the relay must remember it anyway. So
  one place decides when a row is due (core/retry.py, as for a sidecar) and the stream redelivers only what a dead or
  cut-off relay held.
- **Order.** The held messages are a table in stream order (holding.py) with the ordering rule applied to it; a
  partition hands out rows only once it is ready (consumer.py: everything unacknowledged of it is in hand), and a
  redelivered message is recognised by its stream sequence, so it is never sent twice at once.
- **Shared state.** Ids a vendor taught (Humanloop's) and dead creates go to the relays' bucket (shared.py) before
  the message is acknowledged, so any relay rewrites an update whose create another delivered.
- **Ownership.** Which partitions this relay consumes is ownership.py's; a partition given up is drained first (its
  rows in flight settle) and what it still held is handed back to the stream (nak, in stream order).
- **Replayed dead letters.** `shipper dlq replay` puts them in the relay's spool; they are leased from it beside the
  stream's rows, their ids negated so that a settlement goes back where the row came from.
- **Bundles** (a message of several keyless records, envelope version 2) go whole to a sink that takes bundles; for
  one that sends record by record, or one that refused a bundle whole, they are written to the relay's spool (which
  splits them) and then acknowledged, and leave from there as replayed dead letters do.
Not responsible for delivering (the forwarders) or for the dead-letter table's schema (the spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import nats.errors
import orjson
from nats.aio.msg import Msg

from shipper.config.relay import RelayConfig
from shipper.core import order
from shipper.core.leasing import take, whole
from shipper.core.rows import DeadLetter, Lease, Retry, Settlement, SpoolRow
from shipper.errors import SpoolError
from shipper.jetstream.connect import describe
from shipper.jetstream.envelope import decode
from shipper.queue.base import Leaser
from shipper.queue.jetstream.consumer import PartitionConsumer
from shipper.queue.jetstream.holding import Held, Holding
from shipper.queue.jetstream.link import Link
from shipper.queue.jetstream.ownership import Ownership
from shipper.queue.jetstream.shared import Shared
from shipper.records import NewRow
from shipper.tasks import stop

log = logging.getLogger(__name__)
# How long giving a partition up waits for its rows in flight to settle before handing back what is left.
HANDOFF_WAIT = 30.0
HANDOFF_POLL = 0.05
ACK_RETRY = 0.5
# How often the janitor looks again while rows wait to be dead-lettered.
JANITOR_POLL = 0.5


class Local(Leaser, Protocol):
    """The relay's own spool file: where its dead letters are written (spool/burial.py), and where `shipper dlq
    replay` puts them back to be sent again (they are leased from it beside the stream's rows)."""

    async def bury(self, dead: Sequence[tuple[SpoolRow, DeadLetter]]) -> list[int]: ...

    async def credential(self, credential_id: int) -> str | None: ...

    async def keyed(self, sink: str, key: str, kind: str) -> list[tuple[int, bytes]]: ...

    async def append(self, rows: Sequence[NewRow]) -> list[int]: ...


@dataclass(slots=True)
class RelayCounters:
    redeliveries: int = 0  # messages the stream handed out again (an earlier delivery was not acknowledged)
    pending: dict[int, int] = field(default_factory=dict)  # partition -> messages not handed out yet (lag)


def row_of(msg: Msg) -> tuple[SpoolRow, str | None]:
    """The row a message carries, and why it cannot be delivered when it is no shipper envelope. Earlier deliveries
    count as attempts the remote may have taken (a repeat, if it now succeeds)."""
    meta = msg.metadata
    seq, earlier = meta.sequence.stream, meta.num_delivered - 1
    try:
        env = decode(msg.data)
    except ValueError as exc:
        body = orjson.dumps(msg.data.decode("utf-8", "replace"))
        return SpoolRow(seq, "-", None, "-", msg.subject, None, body, time.time(), earlier), f"not a shipper row: {exc}"
    row = SpoolRow(seq, env.target, env.key, env.method, env.path, env.query, env.body, env.created_at, earlier,
                   env.scope, env.after, env.kind, None, env.records, min(earlier, 1))  # fmt: skip
    return row, None


def local_part(given: Settlement) -> Settlement:
    """The part of a settlement that is the relay's spool's (negative ids: replayed dead letters), ids as it knows
    them."""
    return Settlement(
        [-i for i in given.delivered if i < 0],
        [replace(r, id=-r.id) for r in given.retry if r.id < 0],
        [replace(d, id=-d.id) for d in given.dead if d.id < 0],
        [-i for i in given.released if i < 0],
        [],
        [-i for i in given.unbundled if i < 0],
    )


class StreamQueue:
    def __init__(
        self,
        config: RelayConfig,
        environ: Mapping[str, str],
        local: Local,
        sinks: Collection[str],
        lease_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.counters = RelayCounters()
        self.link = Link(config, environ)
        self._local = local
        self._sinks = frozenset(sinks)
        self._lease_timeout = lease_timeout
        self._clock = clock
        self._holding: Holding[Msg] = Holding()
        self._unfit: dict[int, str] = {}  # seq -> why it cannot be delivered: dead-lettered by the janitor
        self._watchers: dict[str, Callable[[int], None]] = {}
        self._consumers: dict[int, tuple[PartitionConsumer, asyncio.Task[None]]] = {}
        self._dead_creates: dict[tuple[int, str, str], int] = {}  # (partition, sink, key) -> dead letter id
        self._acking: dict[int, int] = {}  # partition -> acknowledgements under way
        self._leaving: dict[int, asyncio.Event] = {}  # partitions being given up: set once they are
        self._acks: set[asyncio.Task[None]] = set()
        self._shared: Shared | None = None
        self._ownership: Ownership | None = None
        self._owning: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sweep = asyncio.Event()
        self._burying = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; consuming starts once connected (until then nothing is held)."""
        self._tasks.append(asyncio.create_task(self._connected(), name="relay-connect"))

    async def close(self) -> None:
        """After the forwarders drained: acknowledgements under way get `timeout` to finish, then everything stops
        (what is still held comes back to a relay after ack_wait). The partitions' leases are given back first, what
        was held handed back to the stream, so the other relays take over at once."""
        if self._ownership is not None and self._owning is not None:
            await stop(self._owning)  # no lease taken or renewed from now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ownership.release_all(), self.config.timeout * 2)
        if self._acks:
            await asyncio.wait(set(self._acks), timeout=self.config.timeout)
        for consumer, _ in self._consumers.values():
            consumer.stop()
        for task in [*self._tasks, *self._acks, *(task for _, task in self._consumers.values())]:
            await stop(task)
        await self.link.close()

    @property
    def owned(self) -> list[int]:
        return sorted(self._consumers)

    @property
    def members(self) -> int:
        return len(self._ownership.members) if self._ownership is not None else 0

    @property
    def held(self) -> int:
        return len(self._holding)

    def ready(self, partition: int) -> bool:
        """Rows of the partition may leave: this relay holds its lease and everything unacknowledged is in hand."""
        found = self._consumers.get(partition)
        return found is not None and found[0].ready and self._ownership is not None and self._ownership.holds(partition)

    async def _connected(self) -> None:
        await self.link.connect()
        assert self.link.shared is not None
        self._shared = Shared(self.link.shared)
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="relay-heartbeats"))
        self._tasks.append(asyncio.create_task(self._janitor(), name="relay-janitor"))
        assert self.link.leases is not None
        self._ownership = Ownership(self.link.leases, self.config, self.gain, self.lose, self.link.errors)
        self._owning = asyncio.create_task(self._ownership.run(), name="relay-ownership")
        self._tasks.append(self._owning)

    # -- partitions -----------------------------------------------------------------------------------------------

    async def gain(self, partition: int) -> None:
        """Start consuming a partition: what was dead-lettered of it is loaded first (its later rows die too)."""
        js = self.link.js
        if js is None or partition in self._consumers:
            return
        consumer = PartitionConsumer(
            js,
            self.config,
            partition,
            lambda: sum(1 for _ in self._holding.in_partition(partition)),
            lambda: not self._acking.get(partition),
            self._admit,
            self._partition_ready,
            self.link.errors,
        )
        task = asyncio.create_task(self._consume(consumer), name=f"relay-partition-{partition}")
        task.add_done_callback(self._consumer_done)
        self._consumers[partition] = (consumer, task)

    async def _consume(self, consumer: PartitionConsumer) -> None:
        partition = consumer.partition
        leaving = self._leaving.get(partition)
        if leaving is not None:  # given up a moment ago and taken again: its last holding handed back first
            await leaving.wait()
        while True:
            try:
                known = await self._shared_state().dead_creates(partition)
                break
            except SpoolError as exc:
                self.link.errors.warning("relay: partition %d: %s", partition, exc)
                await asyncio.sleep(ACK_RETRY)
        for (sink, key), letter in known.items():
            self._dead_creates.setdefault((partition, sink, key), letter)
        await consumer.run()

    async def lose(self, partition: int) -> None:
        """Stop consuming a partition: no new row leaves it, its rows in flight settle (and are acknowledged), and
        what is left is handed back to the stream in stream order, for its next owner."""
        found = self._consumers.pop(partition, None)
        if found is None:
            return
        consumer, task = found
        consumer.stop()
        left = self._leaving[partition] = asyncio.Event()
        try:
            await stop(task)
            deadline = time.monotonic() + HANDOFF_WAIT
            while time.monotonic() < deadline and (  # noqa: ASYNC110 - sends settle in the forwarders, not here
                self._acking.get(partition) or any(h.leased_until > self._clock() for h in self._in(partition))
            ):
                await asyncio.sleep(HANDOFF_POLL)
            for held in self._in(partition):
                if held.settled:
                    continue
                self._holding.forget(held.row.id)
                self._unfit.pop(held.row.id, None)
                with contextlib.suppress(nats.errors.Error, OSError):
                    await held.handle.nak()
        finally:
            del self._leaving[partition]
            left.set()

    def _in(self, partition: int) -> list[Held[Msg]]:
        return self._holding.in_partition(partition)

    def _partition_ready(self) -> None:
        """Rows held there may leave now: the forwarders look at once, and the janitor."""
        for sink in self._holding.sinks():
            self._wake(sink, 1)
        self._sweep.set()

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("relay: %s died", task.get_name(), exc_info=task.exception())

    def _admit(self, partition: int, msgs: list[Msg]) -> None:
        now = time.monotonic()
        counts: dict[str, int] = {}
        for msg in msgs:
            row, unfit = row_of(msg)
            redelivered = msg.metadata.num_delivered > 1
            self.counters.redeliveries += redelivered
            if not self._holding.admit(row, partition, msg, now):
                continue  # one this relay holds already: the same row, with a fresh handle
            doomed = self._dead_create_of(partition, row)
            if unfit is None and doomed is not None:
                unfit = order.reason(*doomed)
            if unfit is not None:
                self._unfit[row.id] = unfit
            if unfit is not None or row.sink not in self._sinks:
                self._sweep.set()
            counts[row.sink] = counts.get(row.sink, 0) + 1
        consumer = self._consumers.get(partition)
        if consumer is not None:
            self.counters.pending[partition] = consumer[0].pending
        for sink, count in counts.items():
            self._wake(sink, count)

    def _dead_create_of(self, partition: int, row: SpoolRow) -> tuple[int, str] | None:
        """The dead create a row depends on, by the spool's rule (order.dead_on_arrival): (the create's dead letter,
        its key)."""
        known = {
            name: self._dead_creates[(partition, row.sink, name)]
            for name in (row.key, row.after)
            if name is not None and (partition, row.sink, name) in self._dead_creates
        }
        died = order.dead_on_arrival(row.kind, row.key, row.after, known)
        return None if died is None else (died, next(name for name, letter in known.items() if letter == died))

    def _wake(self, sink: str, count: int) -> None:
        callback = self._watchers.get(sink)
        if callback is not None:
            callback(count)

    # -- the Leaser -----------------------------------------------------------------------------------------------

    def watch(self, sink: str, callback: Callable[[int], None]) -> None:
        self._watchers[sink] = callback
        self._local.watch(sink, callback)

    async def lease(self, sink: str, limit: int, max_bytes: int = 1 << 62, bundles: bool = False) -> Lease:
        """Replayed dead letters first (their ids negated, so a settlement finds its way back), then the stream's."""
        replayed = await self._local.lease(sink, limit, max_bytes, bundles)
        local = [row._replace(id=-row.id) for row in replayed.rows]
        now = self._clock()
        rows = (row for row in self._holding.eligible(sink, now, self.ready) if row.id not in self._unfit)
        room = limit - sum(row.records for row in local)
        taken, met = take(rows, room, max_bytes, bundles) if room > 0 else ([], [])
        apart = [seq for seq in met if not self._fits(seq, bundles, limit, max_bytes)]  # the others: a later lease
        if apart:  # bundles this sink cannot send whole: its next lease finds their records in the relay's spool
            await self._take_apart(apart)
        leased = self._holding.lease(taken, now + self._lease_timeout)
        later = [due for due in (replayed.next_due, self._holding.next_due(sink, now)) if due is not None]
        return Lease(local + leased, min(later) if later and len(local) + len(leased) < limit else None)

    async def settle(
        self,
        delivered: Iterable[int] = (),
        retry: Iterable[Retry] = (),
        dead: Iterable[DeadLetter] = (),
        released: Iterable[int] = (),
        learned: Iterable[tuple[str, str, str]] = (),
        unbundled: Iterable[int] = (),
    ) -> None:
        """Learnt ids and dead letters are written first (SpoolError if they cannot be: the forwarder tries the whole
        settlement again, and what was written is not written twice); then acknowledgements start, each row still
        blocking its key until the stream confirms it."""
        given = Settlement(list(delivered), list(retry), list(dead), list(released), list(learned), list(unbundled))
        if given.learned:
            await self._shared_state().learn(given.learned)
        local = local_part(given)
        if local.delivered or local.retry or local.dead or local.released or local.unbundled:
            await self._local.settle(local.delivered, local.retry, local.dead, local.released, (), local.unbundled)
        await self._bury([(d.id, d) for d in given.dead if d.id > 0])
        for seq in given.delivered:
            if seq > 0:
                self._acknowledge(self._holding.settle(seq))
        for r in given.retry:
            if r.id > 0:
                self._holding.retry(r.id, r.next_attempt_at, r.unanswered)
        for seq in given.released:
            if seq > 0:
                self._holding.release(seq)
        await self._take_apart([seq for seq in given.unbundled if seq > 0])

    def _fits(self, seq: int, bundles: bool, limit: int, max_bytes: int) -> bool:
        """Whether a held bundle may leave whole in some lease of this sink (one with room enough)."""
        held = self._holding.get(seq)
        return held is not None and whole(held.row, bundles, limit, max_bytes)

    async def _take_apart(self, seqs: Iterable[int]) -> None:
        """Bundles (several keyless records in one message) a sink must send record by record, or a send refused in
        part: written to the relay's spool, which splits them, and then acknowledged (the spool has them durably).
        Nothing orders keyless records, so they may leave from there beside the stream's rows; but they are this
        relay's from now on, as replayed dead letters are (a relay that dies keeps them until it is back)."""
        held = [h for h in (self._holding.get(seq) for seq in seqs) if h is not None and not h.settled]
        if not held:
            return
        rows = [h.row for h in held]
        await self._local.append(
            [NewRow(r.sink, r.method, r.path, r.query, r.body, None, records=r.records) for r in rows]
        )
        for h in held:
            self._acknowledge(self._holding.settle(h.row.id))

    # -- the Lookups ----------------------------------------------------------------------------------------------

    async def credential(self, credential_id: int) -> str | None:
        """No key travels in the stream: its rows carry none, and the sinks deliver with their own. A dead letter
        replayed with `--api-key-env` carries the key it was given, stored in the relay's spool."""
        return await self._local.credential(credential_id)

    async def upstream_id(self, sink: str, local: str) -> str | None:
        return await self._shared_state().upstream_id(sink, local)

    async def keyed(self, sink: str, key: str, kind: str) -> list[tuple[int, bytes]]:
        """The rows a row joins at its send (otlp/join.py): those replayed into the relay's spool (ids negated),
        then those held of the stream."""
        replayed = [(-row_id, body) for row_id, body in await self._local.keyed(sink, key, kind)]
        return replayed + [(row.id, row.body) for row in self._holding.keyed(sink, key, kind)]

    # -- dead letters and acknowledgements ------------------------------------------------------------------------

    def _shared_state(self) -> Shared:
        if self._shared is None:
            raise SpoolError("not connected to NATS yet")
        return self._shared

    async def _bury(self, dead: list[tuple[int, DeadLetter]]) -> None:
        """Dead letters written to the spool file with the held rows that die with them (a dead create's updates
        and dependants, transitively, each naming its create's dead letter), dead creates told to the other relays,
        then all acknowledged. Tried again after a failure, nothing is written twice; one burial at a time (the
        forwarders' and the janitor's could otherwise both take a dependant)."""
        async with self._burying:
            await self._bury_now(dead)

    async def _bury_now(self, dead: list[tuple[int, DeadLetter]]) -> None:
        batch = [(held, letter) for held, letter in ((self._holding.get(s), d) for s, d in dead) if held is not None]
        chosen: dict[int, Held[Msg]] = {}
        while batch:
            batch = [(held, letter) for held, letter in batch if not held.settled and held.row.id not in chosen]
            fresh = [(held, letter) for held, letter in batch if held.buried is None]
            if fresh:
                ids = await self._local.bury([(held.row, letter) for held, letter in fresh])
                for (held, _), letter_id in zip(fresh, ids, strict=True):
                    held.buried = letter_id
            following: dict[int, tuple[Held[Msg], DeadLetter]] = {}
            for held, _ in batch:
                chosen[held.row.id] = held
                row = held.row
                if row.kind != "create" or row.key is None or held.buried is None:
                    continue
                await self._shared_state().died(held.partition, row.sink, row.key, held.buried)
                self._dead_creates.setdefault((held.partition, row.sink, row.key), held.buried)
                reason = order.reason(held.buried, row.key)
                for dependant in self._holding.dependants(row):
                    following.setdefault(
                        dependant.id, (self._held(dependant.id), DeadLetter(dependant.id, None, None, reason))
                    )
            batch = list(following.values())
        for seq in chosen:
            self._acknowledge(self._holding.settle(seq))

    def _held(self, seq: int) -> Held[Msg]:
        held = self._holding.get(seq)
        assert held is not None
        return held

    def _acknowledge(self, held: Held[Msg] | None) -> None:
        if held is None:
            return
        self._acking[held.partition] = self._acking.get(held.partition, 0) + 1
        task = asyncio.create_task(self._ack(held), name=f"relay-ack-{held.row.id}")
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _ack(self, held: Held[Msg]) -> None:
        """Until the stream confirms it (the handle may change meanwhile: a redelivery of the same message)."""
        try:
            while True:
                try:
                    await held.handle.ack_sync(timeout=self.config.timeout)
                    break
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    self.link.errors.warning("relay: cannot acknowledge message %d yet: %s", held.row.id, describe(exc))
                    await asyncio.sleep(ACK_RETRY)
        finally:
            self._acking[held.partition] -= 1
        self._holding.forget(held.row.id)
        self._unfit.pop(held.row.id, None)
        consumer = self._consumers.get(held.partition)
        if consumer is not None:
            consumer[0].room.set()
        self._wake(held.row.sink, 1)  # the next row of its key may leave now (or be dead-lettered)
        if self._doomed_held():
            self._sweep.set()

    # -- background -----------------------------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        """in_progress() for every held message the stream has not heard of for ack_wait / 3: a slow vendor call, a
        retry's backoff or a row waiting behind its key is not handed to another relay."""
        interval = self.config.ack_wait / 3
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            for held in self._holding.stale(now - interval):  # settled ones too: their acks may be retrying
                try:
                    await held.handle.in_progress()
                    held.touched = now
                except (nats.errors.Error, OSError) as exc:
                    self.link.errors.warning("relay: cannot keep message %d: %s", held.row.id, describe(exc))

    def configure(self, sinks: Collection[str]) -> None:
        """A reload changed the sinks: messages for a sink gone are dead-lettered from now on (the janitor's), those
        for a sink added are delivered."""
        self._sinks = frozenset(sinks)
        self._sweep.set()

    def _no_sink(self, sink: str) -> str:
        return f"no sink {sink!r} in this relay's configuration ({', '.join(sorted(self._sinks))})"

    def _doomed_held(self) -> bool:
        """Whether some held message waits to be dead-lettered."""
        return bool(self._unfit) or any(sink not in self._sinks for sink in self._holding.sinks())

    async def _janitor(self) -> None:
        """Dead-letters what can never be delivered (a message of another shape, a target this relay has no sink
        for, a row whose create was dead-lettered), in the rule's order, once its partition is ready."""
        while True:
            if self._doomed_held():  # some may wait for their partition to be ready, or behind their key
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sweep.wait(), JANITOR_POLL)
            else:
                await self._sweep.wait()
            self._sweep.clear()
            now = self._clock()
            doomed: list[tuple[int, DeadLetter]] = []
            for sink in self._holding.sinks():
                unknown = None if sink in self._sinks else self._no_sink(sink)
                for row in self._holding.eligible(sink, now, self.ready):
                    reason = self._unfit.get(row.id, unknown)
                    if reason is not None:
                        doomed.append((row.id, DeadLetter(row.id, None, None, reason)))
            try:
                await self._bury(doomed)
            except SpoolError as exc:
                self.link.errors.warning("relay: cannot dead-letter yet: %s", exc)
                await asyncio.sleep(ACK_RETRY)
                self._sweep.set()
