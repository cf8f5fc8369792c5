"""What a relay holds (queue/jetstream/holding.py): a message handed out again is recognised by its sequence and never
becomes a second row; a row whose outcome is recorded blocks its key until its acknowledgement is confirmed; an older
message taken over after newer ones is put in stream order; and, under any history, no two rows of a key are out at
once and none leaves before an older row of its key is gone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shipper.core.rows import SpoolRow
from shipper.queue.jetstream.holding import Held, Holding


def row(seq: int, key: str | None = None, kind: str | None = None, after: str | None = None) -> SpoolRow:
    return SpoolRow(seq, "hl", key, "POST", "/x", None, b"{}", 0.0, 0, None, after, kind)


def everywhere(partition: int) -> bool:
    return True


def ids(holding: Holding[str], now: float = 10.0) -> list[int]:
    return [r.id for r in holding.eligible("hl", now, everywhere)]


def test_a_redelivery_is_the_same_row_with_a_fresh_handle() -> None:
    holding: Holding[str] = Holding()
    assert holding.admit(row(1, "k"), 0, "first", 1.0)
    holding.lease([row(1, "k")], until=100.0)
    assert not holding.admit(row(1, "k"), 0, "again", 2.0)
    held = holding.get(1)
    assert held is not None and (held.handle, held.touched, held.leased_until) == ("again", 2.0, 100.0)
    assert len(holding) == 1 and ids(holding) == []  # still out: not handed out twice


def test_a_settled_row_blocks_its_key_until_forgotten() -> None:
    holding: Holding[str] = Holding()
    for seq in (1, 2, 3):
        holding.admit(row(seq, "k" if seq < 3 else "other"), 0, "m", 0.0)
    assert ids(holding) == [1, 3]
    holding.settle(1)
    assert ids(holding) == [3]  # its acknowledgement is under way: 2 waits
    holding.forget(1)
    assert ids(holding) == [2, 3]


def test_an_older_message_taken_over_late_goes_first() -> None:
    holding: Holding[str] = Holding()
    holding.admit(row(7, "k"), 0, "m", 0.0)
    holding.admit(row(5, "k"), 0, "m", 0.0)  # handed out again after 7 (its previous holder died)
    assert ids(holding) == [5]


def test_a_retry_waits_for_its_time_and_holds_its_key_back() -> None:
    holding: Holding[str] = Holding()
    holding.admit(row(1, "k"), 0, "m", 0.0)
    holding.admit(row(2, "k"), 0, "m", 0.0)
    (leased,) = holding.lease([row(1, "k")], until=100.0)
    assert leased.attempts == 1
    holding.retry(1, due=20.0, unanswered=True)
    assert ids(holding, now=10.0) == [] and holding.next_due("hl", 10.0) == 20.0
    (again,) = holding.eligible("hl", 20.0, everywhere)
    assert (again.id, again.attempts, again.unanswered) == (1, 1, 1)


def test_a_partition_not_ready_hands_out_nothing() -> None:
    holding: Holding[str] = Holding()
    holding.admit(row(1), 0, "m", 0.0)
    holding.admit(row(2), 1, "m", 0.0)
    assert [r.id for r in holding.eligible("hl", 1.0, lambda p: p == 1)] == [2]


def test_a_dead_create_takes_its_updates_and_dependants() -> None:
    holding: Holding[str] = Holding()
    rows = [row(1, "k", "create"), row(2, "k", "update"), row(3, "c", "create", after="k"), row(4, "o", "create")]
    for r in rows:
        holding.admit(r, 0, "m", 0.0)
    assert [r.id for r in holding.dependants(rows[0])] == [2, 3]


def held_rows(holding: Holding[str]) -> list[Held[str]]:
    return [h for h in (holding.get(seq) for seq in range(1, 13)) if h is not None]


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, int]]:
    steps = st.tuples(st.sampled_from(["admit", "lease", "settle", "forget", "retry", "release"]), st.integers(1, 12))
    return draw(st.lists(steps, max_size=80))


@given(histories())
def test_under_any_history_a_key_has_one_row_out_and_none_passes_an_older_one(history: list[tuple[str, int]]) -> None:
    holding: Holding[str] = Holding()
    now = 10.0
    for op, seq in history:
        if op == "admit":
            holding.admit(row(seq, f"k{seq % 3}"), seq % 2, "m", now)
        elif op == "lease":
            out = list(holding.eligible("hl", now, everywhere))
            keys = [r.key for r in out]
            assert len(keys) == len(set(keys))  # one row per key at once
            for r in out:  # none passes an older row of its key still held (out, settled or waiting)
                assert not any(o.row.key == r.key and o.row.id < r.id for o in held_rows(holding))
                held = holding.get(r.id)
                assert held is not None and held.leased_until <= now and not held.settled
            holding.lease(out, until=now + 100)
        elif op == "settle":
            holding.settle(seq)
        elif op == "forget":
            holding.forget(seq)
        elif op == "retry":
            holding.retry(seq, due=now, unanswered=False)
        else:
            holding.release(seq)
        assert holding.sinks() == {h.row.sink for h in held_rows(holding)}
