"""Partition ownership for a group of relays: leases in the relays' `<bucket>-leases` key-value bucket, whose
entries expire `lease_ttl` after their last write, so a relay that dies loses its leases by itself.

Every lease_ttl / 3 a relay renews its membership (`member.<id>`) and each partition lease it holds
(`partition.<n>`, compare-and-set on the revision it last wrote: a lease another relay took after it lapsed is not
written over; one whose entry still names this relay at a revision it never heard of, a renewal whose answer was
lost, is adopted), reads who is alive and who holds what, and follows shares.py: gives back what exceeds its fair share
(draining it first: its rows in flight settle, the rest go back to the stream) and takes free partitions up to it
(a create, which fails if another relay was first). A relay that could not renew a lease for 2/3 of lease_ttl gives
the partition up by itself, since another may take it once the entry expires: at most lease_ttl after a relay
dies, its partitions are free, and within lease_ttl / 3 more the others hold them (then its unacknowledged messages
come back to them after ack_wait: consumer.py waits for those before anything of the partition leaves).
Not responsible for consuming (queue.py, consumer.py) or for the share rule (shares.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from shipper.config.relay import RelayConfig
from shipper.jetstream.connect import describe
from shipper.logs import Throttled
from shipper.queue.jetstream.shares import plan

log = logging.getLogger(__name__)


def relay_id() -> str:
    """This process's name in the group: host, pid and a random part (a restarted relay is a new member)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class Lease:
    revision: int
    renewed: float  # monotonic time of the last write the bucket confirmed


class Ownership:
    def __init__(
        self,
        bucket: KeyValue,
        config: RelayConfig,
        gain: Callable[[int], Coroutine[Any, Any, None]],
        lose: Callable[[int], Coroutine[Any, Any, None]],
        errors: Throttled,
    ) -> None:
        self.me = relay_id()
        self.members: list[str] = [self.me]
        self.leases: dict[int, Lease] = {}
        self._giving: dict[int, asyncio.Task[None]] = {}  # being drained, their leases still renewed meanwhile
        self._dropping: set[asyncio.Task[None]] = set()
        self._kv = bucket
        self._config = config
        self._gain = gain
        self._lose = lose
        self._errors = errors

    def holds(self, partition: int) -> bool:
        """Whether rows of the partition may leave this relay now: its lease is live and not being given back."""
        return partition in self.leases and partition not in self._giving

    async def run(self) -> None:
        """Tick every lease_ttl / 3, for as long as the relay runs. A tick is bounded by that interval (a bucket call
        that never answers must not stop the look at lapsed leases), and no failure ends the loop: a relay that no
        longer ticks would go on consuming partitions whose leases lapsed."""
        interval = self._config.lease_ttl / 3
        while True:
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.tick(), interval)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                self._errors.warning("relay: cannot reach the lease bucket: %s", describe(exc))
            except Exception:
                log.exception("relay: partition ownership: a tick failed")
            await self._drop_lapsed()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def release_all(self) -> None:
        """At a stop (the forwarders drained): give every partition back and leave the group at once, so the others
        need not wait for the entries to expire (their shares grow at their next look)."""
        for partition in sorted(self.leases):
            if partition not in self._giving:
                self._give(partition)
        await asyncio.gather(*self._giving.values(), *self._dropping, return_exceptions=True)
        try:
            await self._kv.delete(f"member.{self.me}")
        except (nats.errors.Error, TimeoutError, OSError) as exc:  # it expires by itself then
            self._errors.warning("relay: cannot leave the group at once: %s", describe(exc))

    async def tick(self) -> None:
        await self._kv.put(f"member.{self.me}", orjson.dumps({"at": time.time()}))
        await asyncio.gather(*(self._renew(partition) for partition in sorted(self.leases)))
        members, owners = await self._read()
        self.members = members
        wanted = plan(self.me, members, owners, self._config.partitions)
        for partition in wanted.give:
            if partition not in self._giving:
                self._give(partition)
        for partition in wanted.take:
            await self._take(partition)

    async def _read(self) -> tuple[list[str], dict[int, str]]:
        """Who is alive and who holds what, as the bucket has it now. Each entry is awaited for at most the bucket
        timeout: the watcher's end-of-values marker can fail to come (an entry expiring while the watcher starts),
        and a tick must not wait for it forever."""
        members: list[str] = []
        owners: dict[int, str] = {}
        watcher = await self._kv.watchall(ignore_deletes=True)
        try:
            while True:
                entry = await watcher.updates(timeout=self._config.timeout)  # type: ignore[no-untyped-call]
                if entry is None:  # the end of what the bucket holds now
                    break
                if entry.key.startswith("member."):
                    members.append(entry.key.removeprefix("member."))
                elif entry.key.startswith("partition.") and entry.value:
                    owners[int(entry.key.removeprefix("partition."))] = entry.value.decode()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(members), owners

    async def _renew(self, partition: int) -> None:
        """Compare-and-set on the revision last written. A mismatch is a lapse only if the entry names another relay
        now: when a renewal's answer was lost (a timeout) the write may still have happened, and the entry then
        still names this relay at a revision it did not hear of, which it adopts."""
        lease = self.leases.get(partition)
        if lease is None:  # given back meanwhile
            return
        key = f"partition.{partition}"
        try:
            lease.revision = await self._kv.update(key, self.me.encode(), last=lease.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:  # deleted or expired: another may take it now
                entry = None
            if entry is None or entry.value != self.me.encode() or entry.revision is None:
                log.warning("relay: partition %d: the lease lapsed and another relay may hold it now", partition)
                await self._drop(partition)
                return
            lease.revision = await self._kv.update(key, self.me.encode(), last=entry.revision)
        lease.renewed = time.monotonic()

    async def _take(self, partition: int) -> None:
        try:
            revision = await self._kv.create(f"partition.{partition}", self.me.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # another relay was first
        self.leases[partition] = Lease(revision, time.monotonic())
        log.info("relay: took partition %d", partition, extra={"relay": self.me})
        await self._gain(partition)

    def _give(self, partition: int) -> None:
        """Drain it in the background (its lease still renewed), then delete the lease (only if still ours), so
        another relay may take it at once."""
        self._giving[partition] = asyncio.create_task(self._hand_over(partition), name=f"relay-give-{partition}")

    async def _hand_over(self, partition: int) -> None:
        try:
            await self._lose(partition)
            lease = self.leases.pop(partition, None)
            if lease is not None:
                try:
                    await self._kv.delete(f"partition.{partition}", last=lease.revision)
                except (nats.errors.Error, TimeoutError, OSError) as exc:  # it expires by itself then
                    self._errors.warning(
                        "relay: partition %d: cannot give its lease back: %s", partition, describe(exc)
                    )
            log.info("relay: gave partition %d back", partition, extra={"relay": self.me})
        finally:
            self._giving.pop(partition, None)

    async def _drop(self, partition: int) -> None:
        """The lease is gone (or may be soon): stop at once, and drain in the background."""
        self.leases.pop(partition, None)
        task = asyncio.create_task(self._lose(partition), name=f"relay-drop-{partition}")
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def _drop_lapsed(self) -> None:
        """A lease not renewed for 2/3 of its time may be another's soon: stop using it now."""
        limit = time.monotonic() - self._config.lease_ttl * 2 / 3
        for partition in [p for p, lease in self.leases.items() if lease.renewed < limit]:
            log.warning("relay: partition %d: its lease could not be renewed in time; giving it up", partition)
            await self._drop(partition)
