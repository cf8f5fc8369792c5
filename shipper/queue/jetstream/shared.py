"""What the relays of a group teach each other, in the shared key-value bucket: the ids a vendor assigned (a
Humanloop log's id, learnt from its create's answer) and the creates that were dead-lettered.

An update delivered by relay B after relay A delivered its create needs the id A learnt: it is written here before
A acknowledges the create, so once the stream has forgotten the create, every relay can rewrite the update. A dead
create is written here before it is acknowledged too: the rows that depend on it die with it on whichever relay
they reach (the spool's rule, order.dead_on_arrival). Keys are `id.<sink>.<local id>` and
`dead.<partition>.<sink>.<key>` (a key's rows all share its partition, so a relay taking one over reads its dead
creates alone), the free-form parts in unpadded base64url (a key may hold any character; the bucket's may not).
Entries never expire, as the spool's id map does not. Not responsible for the connection (link.py).
"""

from __future__ import annotations

import base64
from typing import TypeVar

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from shipper.errors import SpoolError
from shipper.jetstream.connect import describe

# Learnt ids kept in this process, to skip a read: they never change once written.
CACHE = 100_000


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=") or "-"


def _text(token: str) -> str:
    return "" if token == "-" else base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


class Shared:
    def __init__(self, bucket: KeyValue) -> None:
        self._kv = bucket
        self._ids: dict[tuple[str, str], str] = {}

    async def upstream_id(self, sink: str, local: str) -> str | None:
        known = self._ids.get((sink, local))
        if known is not None:
            return known
        found = await self._get(f"id.{_token(sink)}.{_token(local)}")
        if found is not None:
            _remember(self._ids, (sink, local), found.decode())
        return None if found is None else found.decode()

    async def learn(self, learned: list[tuple[str, str, str]]) -> None:
        """Written (on a majority of the bucket's replicas) when this returns; SpoolError if it cannot be now."""
        for sink, local, upstream in learned:
            await self._put(f"id.{_token(sink)}.{_token(local)}", upstream.encode())
            _remember(self._ids, (sink, local), upstream)

    async def dead_creates(self, partition: int) -> dict[tuple[str, str], int]:
        """Every dead create of a partition, (sink, key) -> its dead letter's id: what a relay taking the partition
        over must know before it holds any of its rows (a key's rows all share its partition)."""
        found: dict[tuple[str, str], int] = {}
        try:
            watcher = await self._kv.watch(f"dead.{partition}.>", ignore_deletes=True)
            try:
                async for entry in watcher:
                    if entry is None:  # the end of what the bucket holds now
                        break
                    _, _, sink, key = entry.key.split(".", 3)
                    found[(_text(sink), _text(key))] = int(orjson.loads(entry.value or b"0"))
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except (nats.errors.Error, TimeoutError) as exc:
            raise SpoolError(f"cannot read the relays' bucket: {describe(exc)}") from None
        return found

    async def died(self, partition: int, sink: str, key: str, letter: int) -> None:
        """A create of `key` was dead-lettered as `letter`; the first one written stays (the oldest)."""
        try:
            await self._kv.create(f"dead.{partition}.{_token(sink)}.{_token(key)}", orjson.dumps(letter))
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # an older dead create of the key is known already
        except (nats.errors.Error, TimeoutError) as exc:
            raise SpoolError(f"cannot record a dead create in the relays' bucket: {describe(exc)}") from None

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise SpoolError(f"cannot read the relays' bucket: {describe(exc)}") from None
        return entry.value

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise SpoolError(f"cannot write to the relays' bucket: {describe(exc)}") from None


V = TypeVar("V")


def _remember(cache: dict[tuple[str, str], V], key: tuple[str, str], value: V) -> None:
    cache[key] = value
    while len(cache) > CACHE:
        del cache[next(iter(cache))]
