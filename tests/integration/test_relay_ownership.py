"""Partition leases in a real JetStream key-value bucket (queue/jetstream/ownership.py), the relays' ticks driven by
the test: relays ticking at once never hold one partition both; they split the partitions evenly; one that stops
ticking (dead) loses its partitions to the others once its leases expire; one that comes back takes its share back,
the other giving it up drained (its `lose` runs before the lease is deleted)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from shipper.config.relay import RelayConfig
from shipper.logs import Throttled
from shipper.queue.jetstream.ownership import Ownership
from tests.jetstream import NatsCluster

PARTITIONS = 8
TTL = 1.0


@pytest.fixture
async def bucket(nats_cluster: NatsCluster) -> AsyncIterator[KeyValue]:
    nc: Client = await nats_cluster.client()
    js = nc.jetstream(timeout=10)
    config = KeyValueConfig(bucket="leases", ttl=TTL, replicas=3, storage=StorageType.FILE)
    yield await js.create_key_value(config)
    await nc.close()


class Relay:
    """An Ownership whose gains and losses are only recorded."""

    def __init__(self, bucket: KeyValue, cluster: NatsCluster) -> None:
        config = RelayConfig(servers=cluster.urls, stream="ROWS", partitions=PARTITIONS, lease_ttl=TTL, timeout=0.2)
        self.consuming: set[int] = set()
        self.lost: list[int] = []
        self.ownership = Ownership(bucket, config, self.gain, self.lose, Throttled(logging.getLogger(__name__)))

    async def gain(self, partition: int) -> None:
        self.consuming.add(partition)

    async def lose(self, partition: int) -> None:
        await asyncio.sleep(0.05)  # draining takes a while: the lease must still be ours meanwhile
        self.consuming.discard(partition)
        self.lost.append(partition)

    async def tick(self) -> None:
        await self.ownership.tick()


async def settle(relays: list[Relay], rounds: int = 6) -> None:
    for _ in range(rounds):
        await asyncio.gather(*(relay.tick() for relay in relays))  # at once: creates race, one wins each
        await asyncio.sleep(0.1)


def holders(relays: list[Relay]) -> list[int]:
    """Every partition consumed, each by one relay only."""
    found = [partition for relay in relays for partition in relay.consuming]
    assert len(found) == len(set(found)), "a partition held twice"
    return found


async def test_relays_split_the_partitions_and_a_dead_ones_move_and_come_back(
    bucket: KeyValue, nats_cluster: NatsCluster
) -> None:
    one, two = Relay(bucket, nats_cluster), Relay(bucket, nats_cluster)
    await settle([one, two])
    assert sorted(holders([one, two])) == list(range(PARTITIONS))
    assert len(one.consuming) == len(two.consuming) == PARTITIONS // 2
    dead = set(one.consuming)
    started = time.monotonic()
    while not dead <= two.consuming:  # `one` stops ticking: its leases expire, `two` takes them
        await two.tick()
        await asyncio.sleep(0.1)
        assert time.monotonic() - started < 2 * TTL + 1, "the dead relay's partitions did not move in time"
    back = Relay(bucket, nats_cluster)  # `one` restarted: a new member
    await settle([back, two], rounds=10)
    assert sorted(holders([back, two])) == list(range(PARTITIONS))
    assert len(back.consuming) == len(two.consuming) == PARTITIONS // 2
    assert set(two.lost) == back.consuming  # what `two` gave back it drained first (lose ran)


async def test_a_renewal_whose_answer_was_lost_keeps_the_lease(bucket: KeyValue, nats_cluster: NatsCluster) -> None:
    """The bucket took a renewal but its answer never came (a timeout): the entry still names this relay, at a
    revision it did not hear of. That is no lapse: the relay adopts the revision and goes on consuming."""
    one = Relay(bucket, nats_cluster)
    await settle([one], rounds=2)
    assert sorted(one.consuming) == list(range(PARTITIONS))
    me = one.ownership.me.encode()
    for partition, lease in one.ownership.leases.items():  # the writes whose answers were lost
        await bucket.update(f"partition.{partition}", me, last=lease.revision)
    await one.tick()
    assert sorted(one.consuming) == list(range(PARTITIONS)) and one.lost == []
    assert sorted(one.ownership.leases) == list(range(PARTITIONS))
    other = Relay(bucket, nats_cluster)  # another relay now, and partition 0 taken from `one` behind its back
    await bucket.delete("partition.0")
    await bucket.create("partition.0", other.ownership.me.encode())
    await one.tick()
    assert 0 not in one.ownership.leases  # a lease another holds is a lapse: given up, drained in the background
    deadline = time.monotonic() + 5
    while 0 not in one.lost:
        assert time.monotonic() < deadline, "the lapsed partition was never drained"
        await asyncio.sleep(0.01)
    assert 0 not in one.consuming and sorted(one.ownership.leases) == list(range(1, PARTITIONS))


async def test_a_relay_cut_off_from_nats_stops_consuming_before_another_takes_its_partitions(
    bucket: KeyValue, nats_cluster: NatsCluster
) -> None:
    """Each relay on its own connection, ticking by itself (Ownership.run). One loses its connection: its ticks fail
    (each bounded, never hanging), it gives every partition up once its leases were not renewed for 2/3 of lease_ttl,
    and the other takes them only after they expired: at no moment do both consume one partition."""
    own = await nats_cluster.client()
    try:
        cut = Relay(await own.jetstream(timeout=10).key_value("leases"), nats_cluster)
        other = Relay(bucket, nats_cluster)
        runs = [asyncio.create_task(relay.ownership.run()) for relay in (cut, other)]
        try:
            deadline = time.monotonic() + 10
            while len(cut.consuming) != PARTITIONS // 2 or len(other.consuming) != PARTITIONS // 2:
                holders([cut, other])
                assert time.monotonic() < deadline, "the relays did not split the partitions"
                await asyncio.sleep(0.01)
            held = set(cut.consuming)
            await own.close()  # cut off: no renewal, no look at the bucket from now on
            started = time.monotonic()
            while not held <= other.consuming:
                holders([cut, other])  # never one partition twice, sampled every 10 ms
                assert time.monotonic() - started < 3 * TTL + 1, "the cut-off relay's partitions did not move"
                await asyncio.sleep(0.01)
            assert cut.consuming == set() and sorted(cut.lost) == sorted(held)
        finally:
            for task in runs:
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
    finally:
        await own.close()
