"""The jetstream sink against a real 3-node JetStream cluster (tests/jetstream.py), fed by the forwarder from a real
SQLite spool: a row leaves the spool only on its PubAck; a row published again is stored once (the stream's dedup
window); a kill -9 of the stream's leader mid-publish loses nothing the spool acknowledged; what the ordering rule
ties together shares a partition, in order; no API key reaches the stream's files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.config.sinks import JetStreamSinkConfig
from shipper.core.rows import SpoolRow
from shipper.forward.forwarder import Forwarder
from shipper.jetstream.envelope import MSG_ID, Envelope, decode
from shipper.records import NewRow
from shipper.sinks.jetstream import JetStreamSink
from shipper.spool import Spool
from shipper.spool.reader import SpoolReader
from tests.jetstream import NatsCluster, create_stream
from tests.support import free_port, wait_for

STREAM = "ROWS"
APP_KEY = "hl-app-key-0123456789abcdef"


def config(cluster: NatsCluster, **over: Any) -> JetStreamSinkConfig:
    fields: dict[str, Any] = {
        "type": "jetstream",
        "servers": cluster.urls,
        "stream": STREAM,
        "partitions": 4,
        "target": "humanloop",
        "timeout": 2,
        "retry_initial_backoff": 0.05,
        "retry_max_backoff": 0.5,
        "duplicate_window": 60,
        "retention": "limits",  # the tests look at everything the stream took
    }
    return JetStreamSinkConfig.model_validate({**fields, **over})


def new_row(n: int, key: str | None = None, **over: Any) -> NewRow:
    fields: dict[str, Any] = {"sink": "fleet", "method": "POST", "path": "/prompts/log", "query": None, "key": key}
    fields["body"] = orjson.dumps({"n": n})
    return NewRow(**{**fields, **over})


@contextlib.asynccontextmanager
async def forwarding(spool: Spool, sink: JetStreamSink, policy: JetStreamSinkConfig) -> AsyncIterator[Forwarder]:
    forwarder = Forwarder(spool, sink, policy)
    task = asyncio.create_task(forwarder.run())
    try:
        yield forwarder
    finally:
        forwarder.stop()
        await forwarder.drain(5)
        await task
        await sink.close()


def waiting(path: Path) -> int:
    reader = SpoolReader.open(path)
    try:
        return reader.waiting()
    finally:
        reader.close()


async def stored(cluster: NatsCluster) -> list[tuple[str, dict[str, str], Envelope]]:
    return [(subject, headers, decode(data)) for subject, headers, data in await cluster.messages(STREAM)]


async def test_rows_leave_the_spool_on_their_pub_ack_once_each_in_order_per_key(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        rows = [
            new_row(n, key=f"k{n % 10}" if n % 2 else None, kind="create" if n < 20 else "update") for n in range(300)
        ]
        ids = await spool.append(rows)
        policy = config(nats_cluster)
        async with forwarding(spool, JetStreamSink("fleet", policy, {}, path), policy):
            await wait_for(lambda: waiting(path) == 0, timeout=30)
    finally:
        await spool.close()
    messages = await stored(nats_cluster)
    assert sorted(env.id for _, _, env in messages) == ids  # every row once: nothing lost, nothing twice
    assert len({headers[MSG_ID] for _, headers, _ in messages}) == len(ids)
    by_key: dict[str, list[int]] = defaultdict(list)
    subjects: dict[str, set[str]] = defaultdict(set)
    for subject, _, env in messages:
        assert env.target == "humanloop" and orjson.loads(env.body)["n"] == env.id - ids[0]
        if env.key is not None:
            by_key[env.key].append(env.id)
            subjects[env.key].add(subject)
    assert all(seq == sorted(seq) for seq in by_key.values())  # stream order is acknowledgement order, per key
    assert all(len(found) == 1 for found in subjects.values())  # a key's rows share a partition


async def test_a_trace_and_its_later_updates_share_a_partition_after_a_restart(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    policy = config(nats_cluster, partitions=64)
    try:
        tree = [
            new_row(0, key="hl:log:root", kind="create"),
            new_row(1, key="hl:log:child", after="hl:log:root", kind="create"),
            new_row(2, key="hl:log:grandchild", after="hl:log:child", kind="create"),
        ]
        await spool.append(tree)
        async with forwarding(spool, JetStreamSink("fleet", policy, {}, path), policy):
            await wait_for(lambda: waiting(path) == 0, timeout=30)
        # A new sink (a restarted sidecar) knows the groups from the state file beside the spool.
        await spool.append([new_row(3, key="hl:log:grandchild", method="PATCH", kind="update")])
        async with forwarding(spool, JetStreamSink("fleet", policy, {}, path), policy):
            await wait_for(lambda: waiting(path) == 0, timeout=30)
    finally:
        await spool.close()
    messages = await stored(nats_cluster)
    assert [env.key for _, _, env in messages][-1] == "hl:log:grandchild"
    assert len({subject for subject, _, _ in messages}) == 1, messages


async def test_a_row_published_again_by_a_restarted_sidecar_is_stored_once(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        await spool.append([new_row(n, key=f"k{n}") for n in range(50)])
        lease = await spool.lease("fleet", 100)
    finally:
        await spool.close()
    policy = config(nats_cluster)
    first, second = JetStreamSink("fleet", policy, {}, path), JetStreamSink("fleet", policy, {}, path)
    try:
        assert (await send_until_up(first, lease.rows)).verdict.value == "delivered"
        # Killed before settling: the next sidecar process leases the same rows again and publishes them again.
        assert (await send_until_up(second, lease.rows)).verdict.value == "delivered"
    finally:
        await first.close()
        await second.close()
    assert (first.duplicates, second.duplicates) == (0, 50)  # the stream's PubAcks said so
    assert len(await nats_cluster.messages(STREAM)) == 50


async def send_until_up(sink: JetStreamSink, rows: Sequence[SpoolRow]) -> Any:
    """A send once the sink's background connection is up (the first sends answer "not connected")."""
    outcome = await sink.send(rows)
    for _ in range(100):
        if "not connected" not in outcome.detail:
            break
        await asyncio.sleep(0.05)
        outcome = await sink.send(rows)
    return outcome


async def test_a_kill9_of_the_stream_leader_mid_publish_loses_no_acknowledged_row(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    policy = config(nats_cluster)
    try:
        ids = await spool.append([new_row(n, key=f"k{n % 1000}") for n in range(20_000)])
        await create_stream(nats_cluster, STREAM, ["shipper.rows.>"], duplicate_window=60)  # as an operator would
        leader = await nats_cluster.leader(STREAM)
        async with forwarding(spool, JetStreamSink("fleet", policy, {}, path), policy) as forwarder:
            await wait_for(lambda: waiting(path) < 19_000, timeout=30)
            await nats_cluster.kill9(leader)
            left = waiting(path)
            await wait_for(lambda: waiting(path) == 0, timeout=60)
    finally:
        await spool.close()
    assert left > 0  # killed mid-publish
    assert forwarder.counters.retried > 0, forwarder.last_error  # the PubAcks in flight were lost, their sends retried
    messages = await stored(nats_cluster)
    assert sorted({env.id for _, _, env in messages}) == ids  # every acknowledged row is in the stream
    assert len(messages) == len(ids)  # repeats after the kill were dropped by the dedup window
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, _, env in messages:
        by_key[str(env.key)].append(env.id)
    assert all(seq == sorted(seq) for seq in by_key.values())  # each key's rows in order across the new leader


async def test_no_api_key_reaches_the_stream_or_its_files(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    policy = config(nats_cluster)
    try:
        await spool.append([new_row(n, key=f"hl:log:{n}", kind="create", credential=APP_KEY) for n in range(20)])
        async with forwarding(spool, JetStreamSink("fleet", policy, {}, path), policy):
            await wait_for(lambda: waiting(path) == 0, timeout=30)
    finally:
        await spool.close()
    dump = b"".join(repr(message).encode() for message in await nats_cluster.messages(STREAM))
    assert b"hl:log:19" in dump and APP_KEY.encode() not in dump
    on_disk = b"".join(f.read_bytes() for node in nats_cluster.nodes for f in node.store.rglob("*") if f.is_file())
    assert b"hl:log:19" in on_disk  # the files hold the messages in clear, so the next look means something
    assert APP_KEY.encode() not in on_disk


async def test_a_record_larger_than_nats_takes_is_dead_lettered_and_the_rest_go(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    policy = config(nats_cluster)
    try:
        huge = new_row(1, body=orjson.dumps({"pad": "x" * (1 << 20)}))
        ids = await spool.append([new_row(0), huge, new_row(2)])
        async with forwarding(spool, JetStreamSink("fleet", policy, {}, path), policy):
            await wait_for(lambda: waiting(path) == 0, timeout=30)
        reader = SpoolReader.open(path)
        try:
            (dead,) = reader.dead_letters()
        finally:
            reader.close()
    finally:
        await spool.close()
    assert dead.id == ids[1] and "over NATS's 1048576" in dead.reason
    assert sorted(env.id for _, _, env in await stored(nats_cluster)) == [ids[0], ids[2]]


async def test_a_stream_that_forgets_repeats_too_soon_holds_the_records_back_saying_why(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    await create_stream(nats_cluster, STREAM, ["shipper.rows.>"], duplicate_window=30)
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        await spool.append([new_row(0)])
        lease = await spool.lease("fleet", 10)
    finally:
        await spool.close()
    sink = JetStreamSink("fleet", config(nats_cluster), {}, path)
    try:
        outcome = await send_until_up(sink, lease.rows)
    finally:
        await sink.close()
    assert outcome.verdict.value == "retry"
    assert "drops repeats only within 30s, shorter than duplicate_window (60s)" in outcome.detail
    assert await nats_cluster.messages(STREAM) == []


async def test_with_no_server_up_a_send_says_not_connected_and_close_stops_trying(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        await spool.append([new_row(0)])
        lease = await spool.lease("fleet", 10)
    finally:
        await spool.close()
    policy = JetStreamSinkConfig.model_validate(
        {"type": "jetstream", "servers": [f"nats://127.0.0.1:{free_port()}"], "stream": STREAM, "target": "t"}
    )
    sink = JetStreamSink("fleet", policy, {}, path)
    outcome = await sink.send(lease.rows)
    assert outcome.verdict.value == "retry" and outcome.detail.startswith("not connected to NATS (nats://127.0.0.1:")
    await sink.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left trying in the background


async def test_the_first_sends_together_create_the_stream_once(
    tmp_path: Path, nats_cluster: NatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh sidecar's first sends come at once: one of them looks the stream up and creates it, the others wait
    for that (each creating it, and asking for its info while it was being placed, once cost a request the servers
    dropped: a send held for its whole timeout)."""
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        await spool.append([new_row(n) for n in range(64)])
        rows = (await spool.lease("fleet", 64)).rows
    finally:
        await spool.close()
    sink = JetStreamSink("fleet", config(nats_cluster), {}, path)
    caplog.set_level(logging.INFO, logger="shipper.sinks.jetstream.connection")
    try:
        outcomes = await asyncio.gather(*(sink.send(rows[n : n + 8]) for n in range(0, 64, 8)))
    finally:
        await sink.close()
    assert [outcome.verdict.value for outcome in outcomes] == ["delivered"] * 8, [o.detail for o in outcomes]
    assert [r.getMessage() for r in caplog.records].count("sink fleet: created stream ROWS") == 1
    assert len(await nats_cluster.messages(STREAM)) == 64
    assert (sink.published, sink.duplicates, sink.pending_acks) == (64, 0, 0)


async def test_the_stream_the_sink_creates_is_a_work_queue_that_refuses_rather_than_drops_when_full(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    """By default the created stream keeps a message until a relay acknowledged it; bounded, it refuses the next
    message when full (the send is retried, its rows still in the spool), never dropping one it stored."""
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        await spool.append([new_row(n, body=orjson.dumps({"pad": "x" * 1000, "n": n})) for n in range(8)])
        rows = (await spool.lease("fleet", 8)).rows
    finally:
        await spool.close()
    sink = JetStreamSink("fleet", config(nats_cluster, retention="workqueue", max_bytes=4096), {}, path)
    try:
        first = await send_until_up(sink, rows[:2])
        full = await sink.send(rows[2:])
    finally:
        await sink.close()
    assert first.verdict.value == "delivered"
    assert full.verdict.value == "retry" and "the stream refused a row" in full.detail, full.detail
    nc = await nats_cluster.client()
    try:
        info = await nc.jetstream(timeout=10).stream_info(STREAM)
    finally:
        await nc.close()
    assert (info.config.retention, info.config.discard, info.config.max_bytes) == ("workqueue", "new", 4096)
    assert 2 <= info.state.messages < 8  # what it took it keeps; the rest it refused
