"""A sidecar (the daemon as a subprocess) whose sink is a real 3-node JetStream cluster: it acknowledges from its
spool while NATS is down entirely and catches up when NATS is back; killed with -9 mid-publish and started again, it
publishes what was not settled again and the stream stores each record once."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from shipper.jetstream.envelope import decode
from shipper.spool.reader import SpoolReader
from tests.jetstream import NatsCluster, jetstream_sink
from tests.support import Daemon, metric, post_items, scrape, wait_for, write_config

STREAM = "ROWS"


def sidecar(tmp_path: Path, cluster: NatsCluster) -> Daemon:
    sinks = jetstream_sink("fleet", cluster, STREAM, "humanloop", 4)
    return Daemon.from_config(write_config(tmp_path, sinks))


def waiting(path: Path) -> int:
    reader = SpoolReader.open(path)
    try:
        return reader.waiting()
    finally:
        reader.close()


async def post(daemon: Daemon, numbers: range) -> list[int]:
    items = [{"sink": "fleet", "path": "/logs", "key": f"k{n % 20}", "body": {"n": n}} for n in numbers]
    async with aiohttp.ClientSession() as session:
        ids: list[int] = []
        for start in range(0, len(items), 250):
            ids += await post_items(session, f"http://{daemon.http}/v1/records", items[start : start + 250])
        return ids


async def stored_numbers(cluster: NatsCluster) -> list[int]:
    return sorted(orjson.loads(decode(data).body)["n"] for _, _, data in await cluster.messages(STREAM))


async def test_with_nats_down_the_sidecar_keeps_acknowledging_and_catches_up(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    daemon = sidecar(tmp_path, nats_cluster)
    spool = tmp_path / "spool.db"
    await daemon.start()
    try:
        await post(daemon, range(0, 200))
        await wait_for(lambda: waiting(spool) == 0, timeout=30)
        for node in nats_cluster.nodes:
            await nats_cluster.kill9(node)
        await post(daemon, range(200, 1200))  # acknowledged from the spool: nothing to publish to
        assert waiting(spool) == 1000
        for node in nats_cluster.nodes:
            await nats_cluster.start(node, wait=False)
        await nats_cluster.wait_ready()
        await wait_for(lambda: waiting(spool) == 0, timeout=60)
        async with aiohttp.ClientSession() as session:
            _, samples = await scrape(session, f"http://{daemon.http}")
    finally:
        assert await daemon.terminate() == 0
    assert await stored_numbers(nats_cluster) == list(range(1200))  # all of them, each once
    # a row counts once, in the send that settled it (a repeat the stream dropped counts as a duplicate too: the
    # outage may have cut a send off after the stream stored its rows)
    assert metric(samples, "shipper_jetstream_published_total", sink="fleet") == 1200
    assert metric(samples, "shipper_jetstream_duplicates_total", sink="fleet") is not None
    assert metric(samples, "shipper_jetstream_pubacks_pending", sink="fleet") == 0


async def test_a_sidecar_killed_mid_publish_publishes_again_and_the_stream_keeps_one_of_each(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    daemon = sidecar(tmp_path, nats_cluster)
    spool = tmp_path / "spool.db"
    await daemon.start()
    try:
        await post(daemon, range(3000))
        await wait_for(lambda: waiting(spool) < 2900, timeout=30)
        await daemon.kill9()
        await daemon.start()
        await wait_for(lambda: waiting(spool) == 0, timeout=60)
    finally:
        await daemon.ensure_stopped()
    assert await stored_numbers(nats_cluster) == list(range(3000))
