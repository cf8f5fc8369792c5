"""The spool on a real SQLite file: durable ids, per-key lease order, settlements, the dead-letter table, the lock,
crash recovery of leases, attempts the remote may have taken, migrations, and the read-only stats `shipper status`
shows."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest

from shipper.core.rows import DeadLetter, Retry, SpoolRow
from shipper.errors import LargerThanSpool, SpoolError, SpoolFull
from shipper.queue.memory import MemoryQueue
from shipper.records import NewRow
from shipper.spool import Spool
from shipper.spool.bounds import Bounds
from shipper.spool.schema import MIGRATIONS, SCHEMA_VERSION
from shipper.spool.stats import read_stats
from tests.support import query_spool, wait_for


def row(n: int, key: str | None = None, sink: str = "remote", size: int = 0) -> NewRow:
    body = orjson.dumps({"n": n, "pad": "x" * size})
    return NewRow(sink=sink, method="POST", path="/in", query=None, body=body, key=key)


def numbers(rows: Sequence[SpoolRow]) -> list[int]:
    return [orjson.loads(r.body)["n"] for r in rows]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
async def spool(path: Path) -> AsyncIterator[Spool]:
    opened = await Spool.open(path, "fsync", lease_timeout=300.0)
    yield opened
    await opened.close()


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_append_returns_increasing_ids_that_survive_close_and_reopen(path: Path, durability: str) -> None:
    spool = await Spool.open(path, durability)
    first = await spool.append([row(0), row(1), row(2)])
    second = await spool.append([row(3)])
    assert first == sorted(first)
    assert second[0] > first[-1]
    await spool.close()

    spool = await Spool.open(path, durability)
    try:
        lease = await spool.lease("remote", 100)
        assert [r.id for r in lease.rows] == first + second
        assert numbers(lease.rows) == [0, 1, 2, 3]
        await spool.settle(delivered=[r.id for r in lease.rows])
        # Ids are never reused, even once every row is gone: a duplicate can always be told apart.
        third = await spool.append([row(4)])
        assert third[0] > second[0]
    finally:
        await spool.close()
    spool = await Spool.open(path, durability)
    try:
        assert (await spool.append([row(5)]))[0] > third[0]
    finally:
        await spool.close()


async def test_concurrent_appends_get_distinct_contiguous_ids_in_one_group_commit(spool: Spool) -> None:
    results = await asyncio.gather(*(spool.append([row(n * 10 + i) for i in range(5)]) for n in range(50)))
    for ids in results:
        assert ids == list(range(ids[0], ids[0] + 5))
    flat = [i for ids in results for i in ids]
    assert len(set(flat)) == 250
    lease = await spool.lease("remote", 1000)
    assert len(lease.rows) == 250


async def test_a_later_row_of_a_key_waits_while_an_earlier_one_is_queued_leased_or_backing_off(spool: Spool) -> None:
    ids = await spool.append([row(0, "a"), row(1, "a"), row(2), row(3, "b"), row(4, "b"), row(5), row(6, "a")])
    a0, a1, _, b0, b1, _, a2 = ids

    # Queued: only the oldest row of each key is eligible; unkeyed rows flow beside them.
    lease = await spool.lease("remote", 100)
    assert numbers(lease.rows) == [0, 2, 3, 5]

    # Leased: nothing more of "a" or "b" while their first rows are out.
    again = await spool.lease("remote", 100)
    assert again.rows == []

    # Backing off: "a"'s first row fails and waits; "a" stays blocked, "b" moves on when its first is delivered.
    await spool.settle(
        retry=[Retry(a0, time.time() + 60, "HTTP 503")], delivered=[b0, lease.rows[1].id, lease.rows[3].id]
    )
    lease = await spool.lease("remote", 100)
    assert [r.id for r in lease.rows] == [b1]
    assert lease.next_due is not None  # it says when "a" can go again

    # Once "a"'s first row is delivered, its next one (and only that) becomes eligible.
    await spool.settle(delivered=[a0, b1])
    lease = await spool.lease("remote", 100)
    assert [r.id for r in lease.rows] == [a1]
    await spool.settle(delivered=[a1])
    assert [r.id for r in (await spool.lease("remote", 100)).rows] == [a2]


async def test_the_same_key_on_another_sink_does_not_wait(spool: Spool) -> None:
    await spool.append([row(0, "k", sink="remote"), row(1, "k", sink="audit")])
    assert numbers((await spool.lease("remote", 10)).rows) == [0]
    assert numbers((await spool.lease("audit", 10)).rows) == [1]


async def test_a_dead_lettered_row_frees_the_next_row_of_its_key(spool: Spool) -> None:
    first, second = await spool.append([row(0, "k"), row(1, "k")])
    await spool.lease("remote", 10)
    await spool.settle(dead=[DeadLetter(first, 400, '{"error": "bad"}', "rejected by the remote")])
    assert [r.id for r in (await spool.lease("remote", 10)).rows] == [second]


async def test_lease_counts_attempts_and_leases_only_its_own_sink(spool: Spool) -> None:
    await spool.append([row(0), row(1, sink="audit")])
    (leased,) = (await spool.lease("remote", 10)).rows
    assert leased.attempts == 1
    assert leased.sink == "remote"


async def test_settle_delivered_removes_the_row_for_good(spool: Spool, path: Path) -> None:
    (row_id,) = await spool.append([row(0)])
    await spool.lease("remote", 10)
    await spool.settle(delivered=[row_id])
    assert (await spool.lease("remote", 10)).rows == []
    assert query_spool(path, "SELECT count(*) FROM rows")[0][0] == 0
    assert query_spool(path, "SELECT count(*) FROM dead_letters")[0][0] == 0


async def test_settle_retry_keeps_the_row_until_due_and_reports_when(spool: Spool) -> None:
    (row_id,) = await spool.append([row(0)])
    await spool.lease("remote", 10)
    due = time.time() + 0.3
    await spool.settle(retry=[Retry(row_id, due, "HTTP 503: busy")])
    lease = await spool.lease("remote", 10)
    assert lease.rows == []
    assert lease.next_due == pytest.approx(due)
    await wait_for(lambda: time.time() >= due, timeout=5)
    (again,) = (await spool.lease("remote", 10)).rows
    assert again.id == row_id
    assert again.attempts == 2


async def test_settle_released_hands_the_row_back_without_counting_an_attempt(spool: Spool) -> None:
    (row_id,) = await spool.append([row(0)])
    (leased,) = (await spool.lease("remote", 10)).rows
    assert leased.attempts == 1
    await spool.settle(released=[row_id])
    (again,) = (await spool.lease("remote", 10)).rows
    assert again.id == row_id
    assert again.attempts == 1


async def test_dead_letters_keep_the_row_and_the_remotes_status_response_and_reason(spool: Spool, path: Path) -> None:
    item = NewRow(
        sink="remote", method="PUT", path="/things/7", query=b'{"v":2}', body=b'{"name":"seven"}', key="thing-7"
    )
    (row_id,) = await spool.append([item])
    await spool.lease("remote", 10)
    before = time.time()
    await spool.settle(dead=[DeadLetter(row_id, 422, '{"error":"name taken"}', "rejected by the remote: HTTP 422")])
    (dead,) = query_spool(
        path,
        "SELECT id, sink, key, method, path, query, body, attempts, failed_at, status, response, reason"
        " FROM dead_letters",
    )
    assert dead[:8] == (row_id, "remote", "thing-7", "PUT", "/things/7", b'{"v":2}', b'{"name":"seven"}', 1)
    assert before <= dead[8] <= time.time()
    assert dead[9:] == (422, '{"error":"name taken"}', "rejected by the remote: HTTP 422")
    assert query_spool(path, "SELECT count(*) FROM rows")[0][0] == 0


async def test_a_dead_letter_without_an_answer_keeps_a_null_status(spool: Spool, path: Path) -> None:
    (row_id,) = await spool.append([row(0)])
    await spool.lease("remote", 10)
    await spool.settle(dead=[DeadLetter(row_id, None, None, "gave up (max_attempts=1)")])
    assert query_spool(path, "SELECT status, response, reason FROM dead_letters") == [
        (None, None, "gave up (max_attempts=1)")
    ]


@pytest.mark.parametrize(("max_bytes", "count"), [(10_000, 5), (450, 2), (250, 1), (1, 1)])
async def test_lease_stops_at_max_bytes_but_always_takes_at_least_one_row(
    spool: Spool, max_bytes: int, count: int
) -> None:
    await spool.append([row(n, size=200) for n in range(5)])  # ~220 bytes each
    lease = await spool.lease("remote", 100, max_bytes)
    assert numbers(lease.rows) == list(range(count))
    assert sum(len(r.body) for r in lease.rows) <= max_bytes or count == 1


async def test_lease_respects_the_row_limit_in_id_order(spool: Spool) -> None:
    await spool.append([row(n) for n in range(10)])
    assert numbers((await spool.lease("remote", 3)).rows) == [0, 1, 2]
    assert numbers((await spool.lease("remote", 3)).rows) == [3, 4, 5]


async def test_a_second_open_of_the_same_spool_fails_with_a_clear_spool_error(spool: Spool, path: Path) -> None:
    with pytest.raises(SpoolError, match="another shipper is already using the spool"):
        await Spool.open(path)


async def test_the_lock_is_released_on_close(path: Path) -> None:
    first = await Spool.open(path)
    await first.close()
    second = await Spool.open(path)
    await second.close()


async def test_leases_left_in_the_file_by_a_dead_process_are_cleared_on_reopen(path: Path) -> None:
    spool = await Spool.open(path, lease_timeout=300.0)
    ids = await spool.append([row(0, "k"), row(1, "k"), row(2)])
    leased = (await spool.lease("remote", 10)).rows
    assert [r.id for r in leased] == [ids[0], ids[2]]
    await spool.close()  # without settling: the sender vanished

    spool = await Spool.open(path, lease_timeout=300.0)
    try:
        again = (await spool.lease("remote", 10)).rows
        assert [r.id for r in again] == [ids[0], ids[2]]
        assert [r.attempts for r in again] == [2, 2]
    finally:
        await spool.close()


async def test_an_expired_lease_hands_the_row_back(path: Path) -> None:
    spool = await Spool.open(path, lease_timeout=0.2)
    try:
        (row_id,) = await spool.append([row(0)])
        await spool.lease("remote", 10)
        assert (await spool.lease("remote", 10)).rows == []
        leased_again: list[int] = []

        async def poll() -> None:
            while not leased_again:
                leased_again.extend(r.id for r in (await spool.lease("remote", 10)).rows)
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), 5)
        assert leased_again == [row_id]
    finally:
        await spool.close()


async def test_the_file_is_wal_and_versioned(spool: Spool, path: Path) -> None:
    assert query_spool(path, "PRAGMA journal_mode")[0][0] == "wal"
    assert query_spool(path, "PRAGMA user_version")[0][0] >= 1


async def test_read_stats_reports_queued_leased_retrying_dead_and_oldest_age(spool: Spool, path: Path) -> None:
    ids = await spool.append([row(n) for n in range(6)] + [row(9, sink="audit")])
    await spool.lease("remote", 3)  # ids[0:3] leased
    await spool.settle(
        retry=[Retry(ids[0], time.time() + 600, "HTTP 503")],
        dead=[DeadLetter(ids[1], 400, "no", "rejected")],
        delivered=[ids[2]],
    )
    await spool.lease("remote", 1)  # ids[3] leased
    now = time.time() + 100
    stats = read_stats(path, ["remote", "audit", "idle"], now=now)
    by_sink = {s.sink: s for s in stats.sinks}
    assert set(by_sink) == {"remote", "audit", "idle"}
    remote = by_sink["remote"]
    assert (remote.queued, remote.leased, remote.retrying, remote.dead_lettered) == (4, 1, 1, 1)
    assert remote.oldest_age is not None
    assert 100 <= remote.oldest_age < 110
    audit = by_sink["audit"]
    assert (audit.queued, audit.leased, audit.retrying, audit.dead_lettered) == (1, 0, 0, 0)
    idle = by_sink["idle"]
    assert (idle.queued, idle.leased, idle.retrying, idle.dead_lettered, idle.oldest_age) == (0, 0, 0, 0, None)
    assert stats.file_bytes > 0
    assert stats.path == str(path)
    assert stats.to_dict()["sinks"][0]["sink"] == "audit"


async def test_read_stats_of_a_missing_spool_is_a_spool_error(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="no spool at"):
        read_stats(tmp_path / "absent.db", ["remote"])


@pytest.mark.parametrize("when_full", ["reject", "drop_oldest"])
async def test_requests_committed_in_one_group_are_admitted_one_by_one_against_the_bound(
    path: Path, when_full: str
) -> None:
    bounded = await Spool.open(path, "fsync", bounds=Bounds(max_rows=10, when_full=when_full))
    try:
        await bounded.append([row(n) for n in range(6)])
        # Queued before the writer wakes, so one group: the first fits, the second would cross the bound.
        first, second = await asyncio.gather(
            bounded.append([row(n) for n in range(6, 10)]),
            bounded.append([row(n) for n in range(10, 13)]),
            return_exceptions=True,
        )
        assert isinstance(first, list) and len(first) == 4
        if when_full == "reject":
            assert isinstance(second, SpoolFull)
            assert [n for (n,) in query_spool(path, "SELECT body->>'n' FROM rows ORDER BY id")] == list(range(10))
        else:
            assert isinstance(second, list) and len(second) == 3
            assert [n for (n,) in query_spool(path, "SELECT body->>'n' FROM rows ORDER BY id")] == list(range(3, 13))
    finally:
        await bounded.close()


@pytest.mark.parametrize("when_full", ["reject", "drop_oldest"])
async def test_a_request_larger_than_the_whole_bound_is_refused_as_such_and_costs_no_row(
    path: Path, when_full: str
) -> None:
    bounded = await Spool.open(path, "fsync", bounds=Bounds(max_rows=5, max_bytes=400_000, when_full=when_full))
    try:
        await bounded.append([row(0)])
        with pytest.raises(LargerThanSpool, match="larger than the whole spool bound"):
            await bounded.append([row(n) for n in range(1, 7)])  # 6 rows > max_rows
        with pytest.raises(LargerThanSpool):
            await bounded.append([row(7, size=500_000)])  # one row > max_bytes
        assert await bounded.append([row(8)]) == [2]  # the spool still takes what fits
        assert [n for (n,) in query_spool(path, "SELECT body->>'n' FROM rows ORDER BY id")] == [0, 8]
    finally:
        await bounded.close()


@pytest.mark.parametrize("link", ["file", "directory"])
async def test_a_spool_reached_through_a_symlink_is_the_same_spool_and_is_refused_naming_its_holder(
    tmp_path: Path, link: str
) -> None:
    real = tmp_path / "real" / "spool.db"
    real.parent.mkdir()
    if link == "file":
        other = tmp_path / "alias.db"
        other.symlink_to(real)
    else:
        (tmp_path / "alias").symlink_to(real.parent, target_is_directory=True)
        other = tmp_path / "alias" / "spool.db"
    first = await Spool.open(real)
    try:
        with pytest.raises(SpoolError, match="another shipper") as refused:
            await Spool.open(other)
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and str(other) in message and str(real) in message
        # The refused open touched nothing: the first owner's rows and leases are as they were.
        await first.append([row(1)])
        assert numbers((await first.lease("remote", 10)).rows) == [1]
    finally:
        await first.close()


async def test_unanswered_counts_attempts_the_remote_may_have_taken_across_retries_and_a_dead_sender(
    path: Path,
) -> None:
    spool = await Spool.open(path, "fsync")
    try:
        refused, timed_out, held = await spool.append([row(0), row(1), row(2)])
        await spool.lease("remote", 3)
        await spool.settle(
            retry=[Retry(refused, 0, "cannot connect"), Retry(timed_out, 0, "no answer within 1s", unanswered=True)]
        )
        await spool.lease("remote", 2)  # refused and timed_out again; held's lease is still in force
        await spool.settle(retry=[Retry(refused, 0, "cannot connect"), Retry(timed_out, 0, "HTTP 503: busy")])
    finally:
        await spool.close()  # held's sender "dies" with its lease in the file

    spool = await Spool.open(path, "fsync")
    try:
        lease = await spool.lease("remote", 3)
        by_id = {r.id: (r.attempts, r.unanswered) for r in lease.rows}
        # Two refusals: two attempts, none reached the remote. A timeout then a 503: the timeout may have landed.
        assert by_id == {refused: (3, 0), timed_out: (3, 1), held: (2, 1)}
    finally:
        await spool.close()


async def test_a_spool_of_schema_5_migrates_and_its_rows_start_with_no_unanswered_attempt(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for number in range(5):
        conn.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version={number + 1};\nCOMMIT;")
    conn.execute(
        "INSERT INTO rows (sink, method, path, body, created_at, attempts) VALUES ('remote', 'POST', '/in', "
        "'{\"n\": 0}', 1.0, 2)"
    )
    conn.close()
    spool = await Spool.open(path, "fsync")
    try:
        (leased,) = (await spool.lease("remote", 10)).rows
        assert (leased.attempts, leased.unanswered) == (3, 0)
    finally:
        await spool.close()
    assert query_spool(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize("queue", ["spool", "memory"])
async def test_a_row_appended_with_a_due_time_waits_for_it_and_keyed_rows_are_read_by_key_and_kind(
    path: Path, queue: str
) -> None:
    """What an LLM span held for its logs relies on (shipper/otlp/join.py), in both queues alike."""
    opened: Spool | MemoryQueue = await Spool.open(path) if queue == "spool" else MemoryQueue()
    try:
        due = time.time() + 600
        held = row(0)._replace(due=due)
        part = row(1, key="otel:t:s")._replace(kind="otel-part", due=due)
        ids = await opened.append([held, part, row(2), row(3)])
        lease = await opened.lease("remote", 10)
        assert numbers(lease.rows) == [2, 3] and lease.next_due == pytest.approx(due)
        assert await opened.keyed("remote", "otel:t:s", "otel-part") == [(ids[1], part.body)]
        assert await opened.keyed("other", "otel:t:s", "otel-part") == []
    finally:
        await opened.close()
