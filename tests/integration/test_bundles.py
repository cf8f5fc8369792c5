"""Bundles in the real spool (schema 8): one row carrying several loose records. Each record keeps an id of its
own (a bundle of n takes n ids, whichever path inserts it), counts as a record everywhere (the bound, the reader,
dead letters), and comes apart into its records, in place, when what sends it cannot take it whole."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shipper.config.sinks import FileSinkConfig
from shipper.core.rows import DeadLetter
from shipper.errors import SpoolFull
from shipper.records import NewRow
from shipper.sinks.file import FileSink
from shipper.spool import Spool, dlq
from shipper.spool.bounds import Bounds
from shipper.spool.reader import SpoolReader, read
from shipper.spool.salvage import salvage
from tests.support import run_cli, write_config

SINK = "remote"


def record(n: int) -> NewRow:
    return NewRow(SINK, "POST", "/in", None, orjson.dumps({"n": n}), None)


def bundle(numbers: range) -> NewRow:
    body = b"\n".join(orjson.dumps({"n": n}) for n in numbers)
    return NewRow(SINK, "POST", "/in", None, body, None, records=len(numbers))


def numbers(body: bytes) -> list[int]:
    return [orjson.loads(line)["n"] for line in body.split(b"\n")]


@pytest.fixture
async def spool(tmp_path: Path) -> Spool:
    opened = await Spool.open(tmp_path / "spool.db")
    yield opened  # type: ignore[misc]
    await opened.close()


async def test_a_bundle_takes_one_id_per_record_and_later_rows_never_reuse_them(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool.open(path)
    try:
        assert await spool.append([record(0), bundle(range(1, 4)), record(4)]) == [1, 2, 3, 4, 5]
        assert await spool.append([bundle(range(5, 7))]) == [6, 7]
    finally:
        await spool.close()
    spool = await Spool.open(path)  # the sequence is in the file: a restart does not hand the ids out again
    try:
        assert await spool.append([record(7)]) == [8]
    finally:
        await spool.close()
    assert read(path, SpoolReader.waiting) == 8  # records, not rows
    assert read(path, lambda r: r.queue_counts(0.0))[SINK].queued == 8
    assert [(r.id, r.records) for r in read(path, SpoolReader.waiting_rows)] == [(1, 1), (2, 3), (5, 1), (6, 2), (8, 1)]


async def test_a_sender_that_takes_bundles_gets_them_whole_counted_as_records(spool: Spool) -> None:
    await spool.append([bundle(range(3)), bundle(range(3, 6)), record(6)])
    lease = await spool.lease(SINK, 6, bundles=True)
    assert [(r.id, r.records) for r in lease.rows] == [(1, 3), (4, 3)]  # the record would make seven
    await spool.settle(delivered=[r.id for r in lease.rows])
    assert read(spool.path, SpoolReader.waiting) == 1


async def test_a_sender_that_takes_no_bundles_gets_the_records_under_their_own_ids(spool: Spool) -> None:
    await spool.append([bundle(range(3)), record(3)])
    lease = await spool.lease(SINK, 16)
    assert [(r.id, r.records, numbers(r.body)) for r in lease.rows] == [
        (1, 1, [0]),
        (2, 1, [1]),
        (3, 1, [2]),
        (4, 1, [3]),
    ]
    assert read(spool.path, SpoolReader.waiting) == 4


async def test_a_bundle_larger_than_the_batch_is_split_before_it_is_handed_out(spool: Spool) -> None:
    await spool.append([bundle(range(4))])
    lease = await spool.lease(SINK, 2, bundles=True)
    assert [(r.id, numbers(r.body)) for r in lease.rows] == [(1, [0]), (2, [1])]
    lease = await spool.lease(SINK, 2, bundles=True)
    assert [r.id for r in lease.rows] == [3, 4]


async def test_a_bundle_refused_whole_comes_back_as_its_records_only_for_its_holder(spool: Spool) -> None:
    await spool.append([bundle(range(3))])
    (held,) = (await spool.lease(SINK, 3, bundles=True)).rows
    await spool.settle(unbundled=[held.id])
    lease = await spool.lease(SINK, 3, bundles=True)  # back at once, apart
    assert [(r.id, r.records) for r in lease.rows] == [(1, 1), (2, 1), (3, 1)]


async def test_a_dead_bundle_counts_its_records_shows_them_and_replays_whole_under_new_ids(
    spool: Spool, tmp_path: Path
) -> None:
    first = (await spool.append([bundle(range(3))]))[0]
    await spool.lease(SINK, 3, bundles=True)
    await spool.settle(dead=[DeadLetter(first, 400, "no", "rejected by the remote: HTTP 400: no")])
    assert read(spool.path, SpoolReader.waiting) == 0
    assert read(spool.path, SpoolReader.dead_count) == 3
    shown = dlq.show_dead(spool.path, first)
    assert (shown.records, shown.body) == (3, [{"n": 0}, {"n": 1}, {"n": 2}])
    config = write_config(tmp_path, f'[sinks.{SINK}]\ntype = "http"\nbase_url = "http://127.0.0.1:9"\n')
    code, out, _ = run_cli("dlq", "list", "--config", str(config))
    assert code == 0 and "POST /in (3 records)" in out and "1 dead letter(s)" in out
    assert dlq.replay(spool.path) == [(1, 4)]  # the new row takes ids 4, 5, 6
    assert read(spool.path, SpoolReader.waiting) == 3
    assert await spool.append([record(9)]) == [7]


async def test_dropping_the_oldest_for_room_counts_a_bundle_as_its_records(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "spool.db", bounds=Bounds(max_rows=4, when_full="drop_oldest"))
    dropped: list[dict[str, int]] = []
    try:
        spool._on_drop = lambda counts: dropped.append(dict(counts))
        await spool.append([bundle(range(3)), record(3)])
        await spool.append([record(4)])  # one over: the oldest row, a bundle of three, makes the room
        assert read(spool.path, SpoolReader.waiting) == 2
        assert dropped == [{SINK: 3}]
    finally:
        await spool.close()


async def test_a_bundle_counts_against_the_bound_by_its_records(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "spool.db", bounds=Bounds(max_rows=3, when_full="reject"))
    try:
        await spool.append([record(0), record(1)])
        with pytest.raises(SpoolFull):
            await spool.append([bundle(range(2, 4))])
    finally:
        await spool.close()


async def test_the_file_sink_writes_a_line_per_record_with_each_record_id(spool: Spool, tmp_path: Path) -> None:
    await spool.append([bundle(range(3)), record(3)])
    out = tmp_path / "out.ndjson"
    sink = FileSink("remote", FileSinkConfig(type="file", path=out))
    await sink.start()
    try:
        await sink.send((await spool.lease(SINK, 10, bundles=sink.batching.bundles)).rows)
    finally:
        await sink.close()
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(line["id"], line["body"]["n"]) for line in lines] == [(1, 0), (2, 1), (3, 2), (4, 3)]


async def test_a_salvage_carries_bundles_over_whole_queued_and_dead_with_their_ids_reserved(tmp_path: Path) -> None:
    old, path = tmp_path / "old.db", tmp_path / "spool.db"
    spool = await Spool.open(old)
    try:
        dead = (await spool.append([bundle(range(2))]))[0]
        await spool.lease(SINK, 2, bundles=True)
        await spool.settle(dead=[DeadLetter(dead, 400, "no", "rejected by the remote: HTTP 400: no")])
        await spool.append([bundle(range(2, 5)), record(5)])
    finally:
        await spool.close()
    report = salvage(old, path)
    assert (report.requeued, report.dead_letters) == (2, 1)
    assert [(r.records, numbers(r.body)) for r in read(path, SpoolReader.waiting_rows)] == [(3, [2, 3, 4]), (1, [5])]
    assert read(path, SpoolReader.waiting) == 4 and read(path, SpoolReader.dead_count) == 2
    spool = await Spool.open(path)
    try:
        assert [r.id for r in read(path, SpoolReader.waiting_rows)] == [1, 4]  # the bundle's records are 1, 2, 3
        assert [d.id for d in dlq.list_dead(path)] == [5]  # the dead bundle's are 5, 6
        assert await spool.append([record(6)]) == [7]
    finally:
        await spool.close()
