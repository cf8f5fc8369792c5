"""The spool's read API on a small real spool: what each question answers, beside a running writer, and the file's
columns being the ones sql.py names."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.core.rows import DeadLetter, Retry, SpoolRow
from shipper.errors import SpoolError
from shipper.records import NewRow
from shipper.spool import Spool, sql
from shipper.spool.reader import QueueCounts, SpoolReader, read
from shipper.spool.schema import SCHEMA_VERSION

RESPONSE = 'HTTP 400: {"error":"no"}'
REASON = f"rejected by the remote: {RESPONSE}"


def row(n: int, sink: str = "remote", **extra: Any) -> NewRow:
    return NewRow(
        sink=sink, method="POST", path=f"/in/{n}", query=None, body=orjson.dumps({"n": n}), **{"key": None, **extra}
    )


@dataclass
class Built:
    path: Path
    spool: Spool
    ids: dict[int, int]  # record number -> row id
    now: float


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    """remote: 0 (backing off), 1 (dead), 2 (leased), 3, 4 (a create naming its scope); audit: 9. Two API keys,
    one learnt id. The spool stays open: every question is asked beside a running writer."""
    path = tmp_path / "spool.db"
    spool = await Spool.open(path, "fsync", lease_timeout=300.0)
    rows = [row(0, credential="sk-remote"), row(1), row(2), row(3), row(4, kind="create", key="e1", scope="s1")]
    ids = dict(
        zip([0, 1, 2, 3, 4, 9], await spool.append([*rows, row(9, "audit", credential="sk-audit")]), strict=True)
    )
    now = time.time()
    await spool.lease("remote", 3)
    await spool.settle(
        retry=[Retry(ids[0], now + 600, "HTTP 503")],
        dead=[DeadLetter(ids[1], 400, RESPONSE, REASON)],
        learned=[("remote", "pr_local", "pr_upstream")],
    )
    yield Built(path, spool, ids, now)
    await spool.close()


def numbers(rows: list[SpoolRow]) -> list[int]:
    return [orjson.loads(r.body)["n"] for r in rows]


Question = Callable[[SpoolReader, Built], Any]
Expected = Callable[[Built], Any]
QUESTIONS: list[tuple[str, Question, Expected]] = [
    ("waiting", lambda r, b: r.waiting(), lambda b: 5),
    ("waiting for one sink", lambda r, b: r.waiting("audit"), lambda b: 1),
    ("waiting for no such sink", lambda r, b: r.waiting("nowhere"), lambda b: 0),
    ("waiting by sink", lambda r, b: r.waiting_by_sink(), lambda b: {"remote": 4, "audit": 1}),
    ("waiting rows in id order", lambda r, b: numbers(r.waiting_rows()), lambda b: [0, 2, 3, 4, 9]),
    ("waiting rows of a sink", lambda r, b: numbers(r.waiting_rows("audit")), lambda b: [9]),
    ("a waiting row's ended attempts", lambda r, b: [x.attempts for x in r.waiting_rows()], lambda b: [1, 0, 0, 0, 0]),
    ("a waiting row's stored scope", lambda r, b: r.waiting_rows()[3].scope, lambda b: "s1"),
    ("retrying", lambda r, b: r.retrying(b.now), lambda b: 1),
    ("retrying once the backoff is over", lambda r, b: r.retrying(b.now + 601), lambda b: 0),
    ("retrying in another sink", lambda r, b: r.retrying(b.now, "audit"), lambda b: 0),
    ("attempts", lambda r, b: r.attempts(), lambda b: 1),
    ("attempts of a sink", lambda r, b: r.attempts("audit"), lambda b: 0),
    ("last errors", lambda r, b: r.last_errors(), lambda b: {b.ids[0]: "HTTP 503"}),
    ("leases", lambda r, b: set(r.leases()), lambda b: {b.ids[2]}),
    (
        "queue counts",
        lambda r, b: {s: c[:3] for s, c in r.queue_counts(b.now).items()},
        lambda b: {"remote": (4, 1, 1), "audit": (1, 0, 0)},
    ),
    (
        "dead letters",
        lambda r, b: [(d.id, d.sink, d.status, d.body, d.query) for d in r.dead_letters()],
        lambda b: [(b.ids[1], "remote", 400, {"n": 1}, None)],
    ),
    ("dead letters of a sink", lambda r, b: r.dead_letters("audit"), lambda b: []),
    ("dead letters since later", lambda r, b: r.dead_letters(since=b.now + 60), lambda b: []),
    ("one dead letter", lambda r, b: getattr(r.dead_letter(b.ids[1]), "response", None), lambda b: RESPONSE),
    ("a dead letter shown", lambda r, b: r.dead_letters()[0].to_dict()["reason"], lambda b: "rejected by the remote"),
    ("no such dead letter", lambda r, b: r.dead_letter(10_000), lambda b: None),
    ("dead count", lambda r, b: r.dead_count(), lambda b: 1),
    ("dead count of a sink", lambda r, b: r.dead_count("audit"), lambda b: 0),
    ("dead by sink", lambda r, b: r.dead_by_sink(), lambda b: {"remote": 1}),
    ("dead letter sinks", lambda r, b: r.dead_letter_sinks(ids=[b.ids[1]]), lambda b: {b.ids[1]: "remote"}),
    ("dead letter sinks of another sink", lambda r, b: r.dead_letter_sinks("audit"), lambda b: {}),
    ("stored credentials", lambda r, b: [c.value for c in r.credentials()], lambda b: ["sk-remote", "sk-audit"]),
    ("learnt ids", lambda r, b: r.learnt_ids(), lambda b: [("remote", "pr_local", "pr_upstream")]),
    ("entity scopes", lambda r, b: [s[:3] for s in r.entity_scopes()], lambda b: [("remote", "e1", "s1")]),
    ("last id", lambda r, b: r.last_id(), lambda b: b.ids[9]),
    ("holds a sink", lambda r, b: (r.holds_sink("audit"), r.holds_sink("nowhere")), lambda b: (True, False)),
    ("version", lambda r, b: r.version(), lambda b: SCHEMA_VERSION),
]


@pytest.mark.parametrize(("question", "expected"), [(q, e) for _, q, e in QUESTIONS], ids=[n for n, _, _ in QUESTIONS])
async def test_each_question_answers_what_the_spool_holds(built: Built, question: Question, expected: Expected) -> None:
    with SpoolReader.open(built.path) as reader:
        assert question(reader, built) == expected(built)


async def test_queue_counts_name_when_the_oldest_row_was_acknowledged(built: Built) -> None:
    counts = read(built.path, lambda r: r.queue_counts(built.now))
    assert isinstance(counts["remote"], QueueCounts)
    oldest = counts["remote"].oldest_created_at
    assert oldest is not None and built.now - 60 < oldest <= built.now


async def test_a_reader_holds_no_snapshot_between_questions_and_never_blocks_the_writer(built: Built) -> None:
    with SpoolReader.open(built.path) as reader:
        assert reader.waiting() == 5
        (new,) = await built.spool.append([row(10)])
        assert reader.waiting() == 6 and reader.last_id() == new


async def test_an_empty_spool_answers_nothing_waiting_and_no_id_handed_out(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "spool.db")
    await spool.close()
    with SpoolReader.open(tmp_path / "spool.db") as reader:
        assert (reader.waiting(), reader.attempts(), reader.dead_letters(), reader.last_id()) == (0, 0, [], None)
        assert (reader.waiting_by_sink(), reader.queue_counts(time.time()), reader.credentials()) == ({}, {}, [])


def test_a_missing_spool_is_a_spool_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match=r"no spool at .*absent\.db"):
        read(tmp_path / "absent.db", SpoolReader.waiting)


async def test_a_question_for_this_schema_refuses_a_file_of_another_version(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    await (await Spool.open(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    assert read(path, SpoolReader.waiting) == 0
    with pytest.raises(SpoolError, match=f"schema 99; this shipper reads {SCHEMA_VERSION}"):
        read(path, SpoolReader.waiting, current=True)


def test_a_file_that_is_no_spool_is_refused_as_a_damaged_one(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(SpoolError, match="not a shipper spool"):
        SpoolReader.damaged(other)


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("dead_letters", sql.DEAD_LETTER),
        ("credentials", sql.CREDENTIAL),
        ("id_map", sql.LEARNT_ID),
        ("entity_scopes", sql.ENTITY_SCOPE),
    ],
)
async def test_the_tables_hold_exactly_the_columns_sql_names(tmp_path: Path, table: str, columns: tuple[str]) -> None:
    await (await Spool.open(tmp_path / "spool.db")).close()
    conn = sqlite3.connect(tmp_path / "spool.db")
    try:
        found = {name for _, name, *_ in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()
    assert found == set(columns)


async def test_a_waiting_row_is_read_from_columns_the_rows_table_holds(tmp_path: Path) -> None:
    await (await Spool.open(tmp_path / "spool.db")).close()
    conn = sqlite3.connect(tmp_path / "spool.db")
    try:
        found = {name for _, name, *_ in conn.execute("PRAGMA table_info(rows)")}
    finally:
        conn.close()
    assert set(sql.SPOOL_ROW) <= found and set(sql.REQUEUED) <= found
