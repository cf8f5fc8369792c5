"""A relay's queue in process (the forwarder, a vendor sink and the StreamQueue over a real 3-node cluster; the
dead letters in a real spool file), for what needs a look inside: an id one relay learnt serves another, a dead
create takes the updates held behind it and those arriving later, and a message the relay has no sink for, or that
is no envelope, is dead-lettered where the relay runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shipper.config.relay import RelayConfig
from shipper.config.sinks import VendorSinkConfig
from shipper.core.partition import partition_of
from shipper.core.rows import SpoolRow
from shipper.forward.forwarder import Forwarder
from shipper.jetstream.envelope import MSG_ID, encode
from shipper.queue.jetstream.consumer import consumer_config, durable
from shipper.queue.jetstream.queue import StreamQueue
from shipper.sinks.vendor import VendorSink
from shipper.spool import Spool
from shipper.spool.reader import SpoolReader
from shipper.vendors import VENDORS
from tests.fakes import HumanloopFake
from tests.fakes.base import BAD_REQUEST
from tests.fakes.snippets import HL_KEY
from tests.jetstream import NatsCluster, create_stream, patiently
from tests.support import wait_for

STREAM = "ROWS"
PARTITIONS = 4


def relay_config(cluster: NatsCluster) -> RelayConfig:
    return RelayConfig(servers=cluster.urls, stream=STREAM, partitions=PARTITIONS, ack_wait=3, lease_ttl=3, timeout=0.5)


@contextlib.asynccontextmanager
async def relay(
    cluster: NatsCluster, spool_path: Path, hl: HumanloopFake, sinks: tuple[str, ...] = ("hl",)
) -> AsyncIterator[StreamQueue]:
    """One relay with a humanloop sink (its own key), started and stopped as the daemon does; `sinks`: the sinks its
    configuration names (only `hl` runs a forwarder)."""
    spool = await Spool.open(spool_path)
    queue = StreamQueue(relay_config(cluster), {"HL": HL_KEY}, spool, sinks, lease_timeout=60)
    policy = VendorSinkConfig(type="humanloop", base_url=hl.url, api_key_env="HL", retry_initial_backoff=0.05,
                              retry_max_backoff=0.3, timeout=5)  # fmt: skip
    sink = VendorSink("hl", VENDORS["humanloop"], policy, queue, {"HL": HL_KEY})
    await sink.start()
    await queue.start()
    forwarder = Forwarder(queue, sink, policy)
    task = asyncio.create_task(forwarder.run())
    try:
        yield queue
    finally:
        forwarder.stop()
        await task
        await forwarder.drain(5)
        await queue.close()
        await sink.close()
        await spool.close()


async def publish(cluster: NatsCluster, rows: list[SpoolRow], target: str = "hl") -> None:
    nc = await cluster.client()
    try:
        js = nc.jetstream(timeout=10)
        for row in rows:
            group = row.key if row.after is None else row.after
            subject = f"shipper.rows.{partition_of(group, PARTITIONS, row.id)}"
            payload, headers = encode(row, "test", target), {MSG_ID: f"test:{row.id}"}
            await patiently(lambda s=subject, p=payload, h=headers: js.publish(s, p, headers=h))  # a repeat is dropped
    finally:
        await nc.close()


def hl_row(row_id: int, method: str, path: str, body: Any) -> SpoolRow:
    planned = VENDORS["humanloop"].plan(method, path, {}, body)
    new = planned.row("hl", None)  # type: ignore[union-attr]
    return SpoolRow(row_id, "hl", new.key, new.method, new.path, new.query, new.body, time.time(), 0, new.scope,
                    new.after, new.kind)  # fmt: skip


def dead_letters(path: Path) -> list[Any]:
    reader = SpoolReader.open(path)
    try:
        return reader.dead_letters(None, None)
    finally:
        reader.close()


async def test_an_id_one_relay_learnt_rewrites_an_update_another_relay_delivers(
    tmp_path: Path, nats_cluster: NatsCluster, hl_fake: HumanloopFake
) -> None:
    await create_stream(nats_cluster, STREAM, ["shipper.rows.>"])
    create = hl_row(1, "POST", "/v5/prompts/log", {"path": "relay/shared", "output": "hi", "log_id": "log_shared1"})
    async with relay(nats_cluster, tmp_path / "a.db", hl_fake):
        await publish(nats_cluster, [create])
        await wait_for(lambda: len(hl_fake.received) == 1, timeout=30)
    prompt_id = hl_fake.logs["log_shared1"].file_id
    answer = VENDORS["humanloop"].plan("POST", "/v5/prompts/log", {}, {"path": "relay/shared", "output": "x"})
    local = answer.answer["prompt_id"]  # type: ignore[union-attr]  # the placeholder the app was told
    assert local != prompt_id
    update = hl_row(2, "PATCH", f"/v5/prompts/{local}/log/log_shared1", {"output": "updated"})
    async with relay(nats_cluster, tmp_path / "b.db", hl_fake):  # another relay, another spool: only KV is shared
        await publish(nats_cluster, [update])
        await wait_for(lambda: len(hl_fake.received) == 2, timeout=30)
    assert hl_fake.received[1].path == f"/v5/prompts/{prompt_id}/log/log_shared1"
    assert not hl_fake.violations


async def acknowledged(cluster: NatsCluster) -> bool:
    nc = await cluster.client()
    try:
        js = nc.jetstream(timeout=10)
        found = [await js.consumer_info(STREAM, f"shipper-relay-{p}") for p in range(PARTITIONS)]
        return all(not c.num_ack_pending and not c.num_pending for c in found)
    finally:
        await nc.close()


async def test_what_cannot_be_delivered_is_dead_lettered_where_the_relay_runs_and_acknowledged(
    tmp_path: Path, nats_cluster: NatsCluster, hl_fake: HumanloopFake
) -> None:
    await create_stream(nats_cluster, STREAM, ["shipper.rows.>"])
    hl_fake.fail(BAD_REQUEST, match=lambda seen: seen.method == "POST" and "doomed" in seen.raw.decode())
    log = "log_doomed1"
    create = hl_row(1, "POST", "/v5/prompts/log", {"path": "relay/doomed", "output": "no", "log_id": log})
    placeholder = VENDORS["humanloop"].plan("POST", "/v5/prompts/log", {}, {"path": "relay/doomed"})
    file_id = placeholder.answer["prompt_id"]  # type: ignore[union-attr]
    updates = [hl_row(n, "PATCH", f"/v5/prompts/{file_id}/log/{log}", {"output": f"u{n}"}) for n in (2, 3)]
    fine = hl_row(4, "POST", "/v5/prompts/log", {"path": "relay/fine", "output": "yes", "log_id": "log_fine1"})
    path = tmp_path / "relay.db"
    async with relay(nats_cluster, path, hl_fake) as queue:
        await publish(nats_cluster, [create, *updates, fine])
        await wait_for(lambda: len(dead_letters(path)) == 3, timeout=30)
        late = hl_row(5, "PATCH", f"/v5/prompts/{file_id}/log/{log}", {"output": "late"})
        await publish(nats_cluster, [late])  # after its create died: dead on arrival
        await publish(nats_cluster, [hl_row(6, "POST", "/v5/prompts/log", {"path": "x", "output": "y"})], "nope")
        nc = await nats_cluster.client()
        await nc.jetstream().publish("shipper.rows.0", b"not an envelope")
        await nc.close()
        await wait_for(lambda: len(dead_letters(path)) == 6, timeout=30)
        await wait_for(lambda: queue.held == 0, timeout=30)
    assert await acknowledged(nats_cluster)
    letters = dead_letters(path)
    first = letters[0]
    assert (first.status, first.path, first.body["log_id"]) == (400, "/prompts/log", log)
    depends = f"depends on row {first.id} (hl:log:{log}), which was dead-lettered"
    # the held updates died with their create, in their order; the late one on arrival. The others are of other
    # partitions, so buried in no order against these.
    dependants = [letter.body["output"] for letter in letters[1:] if letter.reason == depends]
    assert dependants == ["u2", "u3", "late"]
    others = sorted(letter.reason.split(":")[0] for letter in letters[1:] if letter.reason != depends)
    assert others == ["no sink 'nope' in this relay's configuration (hl)", "not a shipper row"]
    assert [seen.body["log_id"] for seen in hl_fake.received] == ["log_fine1"]


async def test_a_message_a_dead_relay_held_is_dead_lettered_once_its_partition_is_ready(
    tmp_path: Path, nats_cluster: NatsCluster, hl_fake: HumanloopFake
) -> None:
    """A relay that died holding a message the next cannot deliver: the message comes back after ack_wait, while
    its partition is not ready yet; it is dead-lettered once the partition is."""
    await create_stream(nats_cluster, STREAM, ["shipper.rows.>"])
    row = hl_row(1, "POST", "/v5/prompts/log", {"path": "x", "output": "y"})
    await publish(nats_cluster, [row], "nope")
    partition = partition_of(row.key, PARTITIONS, row.id)
    nc = await nats_cluster.client()
    try:  # the dead relay: it fetched the message and never acknowledged it
        js = nc.jetstream(timeout=10)
        await js.add_consumer(STREAM, consumer_config(relay_config(nats_cluster), partition))
        sub = await js.pull_subscribe_bind(durable=durable(relay_config(nats_cluster), partition), stream=STREAM)
        assert len(await patiently(lambda: sub.fetch(1, timeout=5))) == 1  # a consumer just made may start late
    finally:
        await nc.close()
    path = tmp_path / "relay.db"
    async with relay(nats_cluster, path, hl_fake) as queue:
        await wait_for(lambda: len(dead_letters(path)) == 1, timeout=30)
        await wait_for(lambda: queue.held == 0, timeout=30)
    assert await acknowledged(nats_cluster)


async def test_messages_for_a_sink_a_reload_removed_are_dead_lettered(
    tmp_path: Path, nats_cluster: NatsCluster, hl_fake: HumanloopFake
) -> None:
    await create_stream(nats_cluster, STREAM, ["shipper.rows.>"])
    path = tmp_path / "relay.db"
    async with relay(nats_cluster, path, hl_fake, ("hl", "kw")) as queue:
        await publish(nats_cluster, [hl_row(1, "POST", "/v5/prompts/log", {"path": "x", "output": "y"})], "kw")
        await wait_for(lambda: queue.held == 1, timeout=30)  # held for kw: a sink of the configuration
        queue.configure(["hl"])  # a reload removed it
        await wait_for(lambda: len(dead_letters(path)) == 1, timeout=30)
        await wait_for(lambda: queue.held == 0, timeout=30)
    assert dead_letters(path)[0].reason == "no sink 'kw' in this relay's configuration (hl)"
