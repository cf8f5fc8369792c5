"""Sidecar -> 3-node JetStream cluster -> relay -> remote, every process real: the sidecar (the daemon with a
`jetstream` sink) publishes, the relay (`shipper run --role relay`) consumes the stream's partitions and delivers
with its own sink. Each record reaches the remote, a message is acknowledged only once the remote took it, a key's
records arrive in order, a relay killed with -9 mid-stream loses nothing (its messages come back to the next one),
while the remote is down the backlog waits in the stream, not in the relay; two relays share the partitions and a
killed one's move to the other; the stream's leader killed, or NATS down entirely, costs nothing; dead letters live
where the relay runs."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from nats.js.api import ConsumerInfo

from tests.jetstream import NatsCluster, jetstream_sink, patiently, relay_daemon
from tests.support import (
    Daemon,
    FakeRemote,
    metric,
    post_items,
    run_cli_async,
    running,
    scrape,
    wait_for,
    write_config,
)

STREAM = "ROWS"
PARTITIONS = 4


def sidecar(tmp_path: Path, cluster: NatsCluster, retention: str = "limits", bundles: int = 1) -> Daemon:
    home = tmp_path / "sidecar"
    home.mkdir()
    sinks = jetstream_sink("fleet", cluster, STREAM, "out", PARTITIONS, retention) + f"bundle_max_records = {bundles}\n"
    return Daemon.from_config(write_config(home, sinks))


def relay(
    tmp_path: Path,
    cluster: NatsCluster,
    remote: FakeRemote,
    name: str = "relay",
    sink_timeout: float = 5,
    batch: bool = False,
    **over: Any,
) -> Daemon:
    sinks = f"""
[sinks.out]
type = "http"
base_url = "{remote.url}"
retry_initial_backoff = 0.05
retry_max_backoff = 0.3
timeout = {sink_timeout}
batch = {"true" if batch else "false"}
"""
    return relay_daemon(tmp_path / name, cluster, STREAM, PARTITIONS, sinks, **{"max_ack_pending": 64, **over})


async def post(daemon: Daemon, numbers: range, keys: int = 10) -> None:
    items = [{"sink": "fleet", "path": "/logs", "key": f"k{n % keys}", "body": {"n": n}} for n in numbers]
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(items), 250):
            await post_items(session, f"http://{daemon.http}/v1/records", items[start : start + 250])


def numbers(remote: FakeRemote) -> list[int]:
    return [int(item.json()["n"]) for item in remote.received]


def in_order_per_key(received: list[int], keys: int = 10) -> bool:
    """Per key, the records arrived in acknowledgement order; a repeat (a record sent again after a relay died
    before its acknowledgement) may follow itself, never a later record."""
    by_key: dict[int, list[int]] = defaultdict(list)
    for n in received:
        seen = by_key[n % keys]
        if not seen or seen[-1] != n:
            seen.append(n)
    return all(seq == sorted(set(seq)) for seq in by_key.values())


async def consumers(cluster: NatsCluster) -> list[ConsumerInfo]:
    nc = await cluster.client()
    try:
        js = nc.jetstream(timeout=10)
        return [await patiently(lambda p=p: js.consumer_info(STREAM, f"shipper-relay-{p}")) for p in range(PARTITIONS)]
    finally:
        await nc.close()


async def settled(cluster: NatsCluster) -> bool:
    """Every partition's messages are acknowledged: nothing pending, nothing waiting."""
    return all(not c.num_ack_pending and not c.num_pending for c in await consumers(cluster))


async def stream_empty(cluster: NatsCluster) -> bool:
    nc = await cluster.client()
    try:
        return (await patiently(lambda: nc.jetstream(timeout=10).stream_info(STREAM))).state.messages == 0
    finally:
        await nc.close()


async def relay_metric(daemon: Daemon, name: str) -> float:
    async with aiohttp.ClientSession() as session:
        _, samples = await scrape(session, f"http://{daemon.http}")
    found = metric(samples, name)
    assert found is not None, name
    return found


async def owned(daemon: Daemon) -> int:
    return int(await relay_metric(daemon, "shipper_relay_partitions_owned"))


async def redeliveries(daemon: Daemon) -> int:
    return int(await relay_metric(daemon, "shipper_relay_redeliveries_total"))


async def split_evenly(one: Daemon, two: Daemon) -> bool:
    return await owned(one) == await owned(two) == PARTITIONS // 2


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """wait_for, with an async condition."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_every_record_reaches_the_remote_once_in_order_per_key_and_is_acknowledged_after(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    side, rel = sidecar(tmp_path, nats_cluster), relay(tmp_path, nats_cluster, remote)
    async with running(side, rel):
        await post(side, range(600))
        await wait_for(lambda: len(remote.received) >= 600, timeout=60)
        await poll(lambda: settled(nats_cluster))
    assert sorted(numbers(remote)) == list(range(600))  # each once
    assert in_order_per_key(numbers(remote))


async def test_a_relay_killed_mid_stream_loses_nothing_the_next_delivers_the_rest_in_order(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    async def slow(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0.01)

    remote.async_behaviour = slow
    side, first = sidecar(tmp_path, nats_cluster, "workqueue"), relay(tmp_path, nats_cluster, remote)
    async with running(side, first):
        await post(side, range(800))
        await wait_for(lambda: len(remote.received) >= 150, timeout=60)
        await first.kill9()  # mid-stream: messages held, some sent and not yet acknowledged
        assert len(remote.received) < 800
        second = relay(tmp_path, nats_cluster, remote, name="relay")  # the same host, started again
        async with running(second):
            await wait_for(lambda: set(numbers(remote)) == set(range(800)), timeout=90)
            await poll(lambda: settled(nats_cluster))
            await poll(lambda: stream_empty(nats_cluster))  # a work queue: what a relay acknowledged is gone
    received = numbers(remote)
    assert in_order_per_key(received)
    # Repeats are only what the first relay had sent and not had acknowledged: at most its sends in flight.
    assert len(received) - 800 <= 64


async def test_while_the_remote_is_down_the_backlog_waits_in_the_stream(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    remote.behaviour = lambda request, body: web.json_response({"down": True}, status=503)
    side, rel = sidecar(tmp_path, nats_cluster), relay(tmp_path, nats_cluster, remote, max_ack_pending=8)
    async with running(side, rel):
        await post(side, range(400), keys=400)  # every record its own key: nothing waits behind another
        await wait_for(lambda: remote.attempts >= 20, timeout=60)

        async def backlog_in_stream() -> bool:
            found = await consumers(nats_cluster)
            return sum(c.num_pending or 0 for c in found) >= 400 - PARTITIONS * 8 and all(
                (c.num_ack_pending or 0) <= 8 for c in found
            )

        await poll(backlog_in_stream)
        # Down for longer than twice ack_wait (3 s): what the relay holds is kept with in_progress(), not redelivered.
        await wait_for(lambda: remote.attempt_times[-1] - remote.attempt_times[0] > 7, timeout=30)
        assert not remote.received
        assert await redeliveries(rel) == 0
        remote.behaviour = None
        await wait_for(lambda: len(set(numbers(remote))) == 400, timeout=90)
        await poll(lambda: settled(nats_cluster))
    assert sorted(set(numbers(remote))) == list(range(400))


async def test_two_relays_share_the_partitions_and_a_killed_ones_move_to_the_other(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    async def slow(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0.01)

    remote.async_behaviour = slow
    side = sidecar(tmp_path, nats_cluster)
    one, two = relay(tmp_path, nats_cluster, remote, "one"), relay(tmp_path, nats_cluster, remote, "two")
    async with running(side, one, two):
        await poll(lambda: split_evenly(one, two), timeout=30)
        await post(side, range(1000))
        await wait_for(lambda: len(remote.received) >= 200, timeout=60)
        await one.kill9()
        killed = time.monotonic()

        async def all_moved() -> bool:
            return await owned(two) == PARTITIONS

        await poll(all_moved, timeout=30)
        moved = time.monotonic() - killed
        assert moved < 2 * 3 + 1  # within 2 x lease_ttl (3 s), and a second for the scrape on a busy machine
        await wait_for(lambda: set(numbers(remote)) == set(range(1000)), timeout=90)
        await poll(lambda: settled(nats_cluster))
        # The killed relay comes back: it takes its share back from the other.
        again = relay(tmp_path, nats_cluster, remote, "one")
        async with running(again):

            async def shared_again() -> bool:
                return await owned(again) == await owned(two) == PARTITIONS // 2

            await poll(shared_again, timeout=30)
            await post(side, range(1000, 1400))
            await wait_for(lambda: set(numbers(remote)) == set(range(1400)), timeout=90)
    assert in_order_per_key(numbers(remote))


async def test_a_vendor_call_slower_than_ack_wait_is_not_handed_to_another_relay(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    async def slow_first(request: web.Request, body: bytes) -> None:
        if orjson.loads(body)["n"] == 0:
            await asyncio.sleep(8)  # ack_wait is 3 s: the relay's in_progress() keeps the message its own

    remote.async_behaviour = slow_first
    side = sidecar(tmp_path, nats_cluster)
    one, two = relay(tmp_path, nats_cluster, remote, "one", 15), relay(tmp_path, nats_cluster, remote, "two", 15)
    async with running(side, one, two):
        await poll(lambda: split_evenly(one, two), timeout=30)
        await post(side, range(20))
        await wait_for(lambda: sorted(numbers(remote)) == list(range(20)), timeout=60)
        await poll(lambda: settled(nats_cluster))
        assert await redeliveries(one) == await redeliveries(two) == 0
    assert sorted(numbers(remote)) == list(range(20))  # each once


async def test_dead_letters_live_where_the_relay_runs_and_shipper_dlq_replays_them_from_there(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    def refuse_three(request: web.Request, body: bytes) -> web.Response | None:
        return web.json_response({"bad": True}, status=400) if orjson.loads(body)["n"] == 3 else None

    remote.behaviour = refuse_three
    side, rel = sidecar(tmp_path, nats_cluster), relay(tmp_path, nats_cluster, remote)
    config = str(rel.config)
    async with running(side, rel):
        await post(side, range(10))
        await wait_for(lambda: len(remote.received) == 9, timeout=60)
        await poll(lambda: settled(nats_cluster))  # the dead letter's message is acknowledged too
        code, out, _ = await run_cli_async("dlq", "list", "--config", config)
        assert code == 0 and "1 dead letter(s)" in out and "HTTP 400" in out, out
        code, out, _ = await run_cli_async("status", "--config", config)  # asks the relay's admin listener
        assert code == 0 and "daemon: running" in out, out
        remote.behaviour = None
        code, out, _ = await run_cli_async("dlq", "replay", "--config", config)
        assert code == 0 and "replayed 1 dead letter(s)" in out, out
        await wait_for(lambda: sorted(numbers(remote)) == list(range(10)), timeout=30)
        code, out, _ = await run_cli_async("dlq", "list", "--config", config)
        assert "0 dead letter(s)" in out, out


async def test_the_streams_leader_killed_mid_stream_costs_no_record_and_no_order(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    async def slow(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0.005)

    remote.async_behaviour = slow
    side, rel = sidecar(tmp_path, nats_cluster), relay(tmp_path, nats_cluster, remote)
    async with running(side, rel):
        await post(side, range(800))
        await wait_for(lambda: len(remote.received) >= 150, timeout=60)
        leader = await nats_cluster.leader(STREAM)
        await nats_cluster.kill9(leader)
        await wait_for(lambda: set(numbers(remote)) == set(range(800)), timeout=120)
        await nats_cluster.start(leader)
        await poll(lambda: settled(nats_cluster), timeout=90)
    assert len(numbers(remote)) - 800 <= 64  # repeats: only acknowledgements the lost leader took with it
    assert in_order_per_key(numbers(remote))


async def test_with_nats_down_entirely_the_relay_waits_and_goes_on_when_it_is_back(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    async def slow(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0.005)

    remote.async_behaviour = slow
    side, rel = sidecar(tmp_path, nats_cluster), relay(tmp_path, nats_cluster, remote)
    async with running(side, rel):
        await post(side, range(600))
        await wait_for(lambda: len(remote.received) >= 100, timeout=60)
        for node in nats_cluster.nodes:
            await nats_cluster.kill9(node)
        down = len(remote.received)
        await post(side, range(600, 800))  # the sidecar acknowledges from its spool meanwhile
        for node in nats_cluster.nodes:
            await nats_cluster.start(node, wait=False)
        await nats_cluster.wait_ready()
        await wait_for(lambda: set(numbers(remote)) == set(range(800)), timeout=120)
        await poll(lambda: settled(nats_cluster), timeout=90)
    assert down < 600  # NATS went down with records of the first batch still in the stream
    assert len(numbers(remote)) - 800 <= 64  # repeats: only acknowledgements cut off by the outage
    assert in_order_per_key(numbers(remote))


async def test_a_relay_stopped_gives_its_partitions_back_without_waiting_for_their_leases_to_expire(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote
) -> None:
    side = sidecar(tmp_path, nats_cluster)
    one, two = relay(tmp_path, nats_cluster, remote, "one"), relay(tmp_path, nats_cluster, remote, "two")
    async with running(side, one, two):
        await poll(lambda: split_evenly(one, two), timeout=30)
        await post(side, range(300))
        await wait_for(lambda: len(remote.received) >= 50, timeout=60)
        assert await one.terminate() == 0  # its leases and membership are given back before it exits
        stopped = time.monotonic()

        async def all_moved() -> bool:
            return await owned(two) == PARTITIONS

        await poll(all_moved, timeout=30)
        assert time.monotonic() - stopped < 3  # within lease_ttl: no lease had to expire
        await wait_for(lambda: set(numbers(remote)) == set(range(300)), timeout=60)
        await poll(lambda: settled(nats_cluster))
    assert in_order_per_key(numbers(remote))


@pytest.mark.parametrize(
    ("batch", "most"),
    [(True, None), (False, None), (True, 10)],
    ids=["batching-sink", "record-by-record-sink", "batching-sink-refusing-more-than-10"],
)
async def test_keyless_records_travel_bundled_and_reach_the_remote_once_each(
    tmp_path: Path, nats_cluster: NatsCluster, remote: FakeRemote, batch: bool, most: int | None
) -> None:
    """With bundle_max_records, a request's keyless records share messages; a relay whose sink batches sends a
    bundle whole, one whose sink sends record by record takes it into its spool, which splits it, as it does a
    bundle the remote refused whole (413: too large)."""
    if most is not None:
        limit = most

        def too_large(request: web.Request, body: bytes) -> web.Response | None:
            return web.json_response({"too": "large"}, status=413) if body.count(b"\n") > limit else None

        remote.behaviour = too_large
    side, rel = sidecar(tmp_path, nats_cluster, bundles=50), relay(tmp_path, nats_cluster, remote, batch=batch)
    items = [{"sink": "fleet", "path": "/logs", "body": {"n": n}} for n in range(1000)]
    async with running(side, rel), aiohttp.ClientSession() as session:
        for start in range(0, 1000, 250):
            await post_items(session, f"http://{side.http}/v1/records", items[start : start + 250])
        await wait_for(lambda: len(remote.bodies()) >= 1000, timeout=60)
        await poll(lambda: settled(nats_cluster))
    assert sorted(body["n"] for body in remote.bodies()) == list(range(1000))  # each once
    assert len(await nats_cluster.messages(STREAM)) == 20  # 4 requests of 250, in bundles of 50
    if most is None:
        assert (remote.attempts < 1000) is batch  # a batching sink sent bundles whole; the other, a record a request
    else:
        assert all(item.body.count(b"\n") <= most for item in remote.received)  # what it took, split to fit
