"""The soak's verdict (bench/soak_report.py) on made-up runs: it must fail a run that lost, misfiled or reordered a
record, and pass one that only repeated records (at-least-once)."""

from __future__ import annotations

import orjson

from bench.soak_load import Ledger, is_reject
from bench.soak_report import Facts, judge


def facts(ledger: Ledger, events: list[tuple[str, int]], dead: list[int], **overrides: object) -> Facts:
    base = Facts(
        seconds=10, ledger=ledger, events=events, dead_bodies=[orjson.dumps({"soak_uid": uid}) for uid in dead],
        queued_at_end=0, drain_seconds=1, drained=True, peak_rss_kib=1024, peak_spool_bytes=4096,
        graceful_stops=1, kills=1, unexpected_exits=[], bad_exit_codes=[],
    )  # fmt: skip
    for name, value in overrides.items():
        setattr(base, name, value)
    return base


def acked_ledger(uids: range, key: str | None = None) -> Ledger:
    ledger = Ledger(next_uid=uids.stop)
    for rank, uid in enumerate(uids, start=1):
        ledger.acked[uid] = (key, rank)
        if is_reject(uid):
            ledger.marked_reject.add(uid)
    return ledger


def split(uids: range) -> tuple[list[tuple[str, int]], list[int]]:
    """What a healthy remote logs for these uids, and what the spool dead-letters."""
    events = [("R" if is_reject(uid) else "D", uid) for uid in uids]
    return events, [uid for uid in uids if is_reject(uid)]


def test_a_clean_run_with_duplicates_passes() -> None:
    uids = range(1, 101)
    events, dead = split(uids)
    events.insert(5, events[4])  # a repeat of the record just delivered
    verdict = judge(facts(acked_ledger(uids, key="k"), events, dead))
    assert verdict.passed, verdict.text()
    assert "duplicates                  1 " in verdict.text()


def test_a_record_never_delivered_is_lost() -> None:
    uids = range(1, 101)
    events, dead = split(uids)
    events.remove(("D", 50))
    verdict = judge(facts(acked_ledger(uids), events, dead))
    assert not verdict.passed
    assert "1 acknowledged record(s) lost" in verdict.text()


def test_an_unacknowledged_record_is_never_lost() -> None:
    uids = range(1, 101)
    events, dead = split(uids)
    ledger = acked_ledger(uids)
    del ledger.acked[50]
    ledger.unacked.add(50)
    events.remove(("D", 50))
    assert judge(facts(ledger, events, dead)).passed


def test_dead_letters_must_match_the_refusals() -> None:
    uids = range(1, 101)
    events, dead = split(uids)
    assert not judge(facts(acked_ledger(uids), events, [*dead, 1])).passed  # an extra dead letter
    assert not judge(facts(acked_ledger(uids), events, dead[1:])).passed  # a refusal not dead-lettered


def test_a_key_delivered_out_of_order_fails() -> None:
    uids = range(1, 11)
    events, dead = split(uids)
    events[2], events[3] = events[3], events[2]
    verdict = judge(facts(acked_ledger(uids, key="k"), events, dead))
    assert "1 per-key order violation(s)" in verdict.text()


def test_an_undrained_spool_or_a_crash_fails() -> None:
    uids = range(1, 11)
    events, dead = split(uids)
    assert not judge(facts(acked_ledger(uids), events, dead, drained=False, queued_at_end=3)).passed
    assert not judge(facts(acked_ledger(uids), events, dead, unexpected_exits=[-11])).passed
