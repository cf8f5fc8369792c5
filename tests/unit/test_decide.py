"""What an outcome means, table by table: delivered, split, retry at a time, dead-letter with a reason (give-up
included), and what the breaker is told."""

from __future__ import annotations

import random

import pytest

from shipper.core.decide import KEEP_DETAIL_CHARS, Breaker, Policy, Settle, Split, decide, retry_delay
from shipper.core.retry import Outcome, Verdict
from shipper.core.rows import DeadLetter, Retry, SpoolRow

NOW = 1_000_000.0
POLICY = Policy(initial_backoff=0.5, max_backoff=30.0)


def row(row_id: int = 1, attempts: int = 1, created_at: float = NOW - 10, unanswered: int = 0) -> SpoolRow:
    return SpoolRow(row_id, "remote", None, "POST", "/x", None, b"{}", created_at, attempts, unanswered=unanswered)


def settle(rows: list[SpoolRow], outcome: Outcome, policy: Policy = POLICY) -> Settle:
    decision = decide(rows, outcome, policy, NOW, random.Random(7))
    assert isinstance(decision, Settle)
    return decision


@pytest.mark.parametrize(
    ("outcome", "too_large"),
    [
        (Outcome(Verdict.REJECT, 413, "HTTP 413: too large"), True),
        (Outcome(Verdict.REJECT, 400, "HTTP 400: bad line"), False),
        (Outcome(Verdict.REJECT, None, "cannot build the request"), False),
    ],
)
def test_a_refused_batch_is_split_in_halves_and_a_413_asks_for_smaller_batches(
    outcome: Outcome, too_large: bool
) -> None:
    rows = [row(i) for i in range(1, 6)]
    decision = decide(rows, outcome, POLICY, NOW, random.Random(1))
    assert decision == Split(rows[:2], rows[2:], too_large)


@pytest.mark.parametrize(
    ("outcome", "breaker", "reason"),
    [
        (Outcome(Verdict.REJECT, 400, "HTTP 400: no"), Breaker.SUCCESS, "rejected by the remote: HTTP 400: no"),
        (Outcome(Verdict.REJECT, 413, "HTTP 413: big"), Breaker.SUCCESS, "rejected by the remote: HTTP 413: big"),
        (Outcome(Verdict.REJECT, None, "no route"), Breaker.SUCCESS, "refused before sending: no route"),
        (
            Outcome(Verdict.AUTH, 401, "HTTP 401: bad key", app_key=True),
            Breaker.UNCHANGED,
            "auth: the remote refused the API key the app sent: HTTP 401: bad key",
        ),
    ],
)
def test_a_final_no_to_one_row_dead_letters_it_with_the_remotes_answer(
    outcome: Outcome, breaker: Breaker, reason: str
) -> None:
    decision = settle([row(3)], outcome)
    assert decision.breaker is breaker
    assert decision.reason == reason
    assert decision.settlement.dead == [DeadLetter(3, outcome.status, outcome.detail, reason)]
    assert not decision.settlement.retry and not decision.settlement.delivered


def test_delivered_rows_are_gone_with_the_ids_the_remote_taught_and_the_breaker_closes() -> None:
    outcome = Outcome(Verdict.DELIVERED, 201, learned=(("local-1", "remote-9"),))
    decision = settle([row(1), row(2)], outcome)
    assert decision.breaker is Breaker.SUCCESS
    assert decision.settlement.delivered == [1, 2]
    assert decision.settlement.learned == [("remote", "local-1", "remote-9")]
    assert decision.reason is None


@pytest.mark.parametrize(
    ("attempts", "retry_after", "low", "high"),
    [
        (1, None, 0.0, 0.5),  # first retry: up to retry_initial_backoff
        (2, None, 0.0, 1.0),
        (4, None, 0.0, 4.0),
        (20, None, 0.0, 30.0),  # capped at retry_max_backoff
        (1, 12.0, 12.0, 12.0),  # the remote's Retry-After wins
        (9, 0.0, 0.0, 0.0),
    ],
)
def test_a_failed_row_is_due_again_after_backoff_from_its_attempts_or_the_retry_after(
    attempts: int, retry_after: float | None, low: float, high: float
) -> None:
    outcome = Outcome(Verdict.RETRY, 503, "HTTP 503: busy", retry_after)
    decision = settle([row(5, attempts)], outcome)
    assert decision.breaker is Breaker.FAILURE
    (retry,) = decision.settlement.retry
    assert retry.id == 5 and retry.error == "HTTP 503: busy"
    assert low <= retry.next_attempt_at - NOW <= high


def test_backoff_is_drawn_from_the_injected_random_source() -> None:
    outcome = Outcome(Verdict.RETRY, 503, "busy")
    first = [retry_delay(row(attempts=5), outcome, POLICY, random.Random(3)) for _ in range(2)]
    assert first[0] == first[1]
    assert first[0] != retry_delay(row(attempts=5), outcome, POLICY, random.Random(4))


def test_an_unanswered_attempt_is_marked_so_a_later_delivery_counts_as_a_repeat() -> None:
    outcome = Outcome(Verdict.RETRY, None, "timed out", unanswered=True)
    assert settle([row(1)], outcome).settlement.retry[0].unanswered is True
    assert settle([row(1)], Outcome(Verdict.RETRY, 503, "busy")).settlement.retry[0].unanswered is False


def test_a_refused_sink_key_holds_the_rows_due_at_once_for_the_breaker_to_pace() -> None:
    decision = settle([row(1, attempts=30), row(2)], Outcome(Verdict.AUTH, 403, "HTTP 403: key"))
    assert decision.breaker is Breaker.KEY_REFUSED
    assert decision.settlement.retry == [Retry(1, NOW, "HTTP 403: key"), Retry(2, NOW, "HTTP 403: key")]
    assert not decision.settlement.dead


@pytest.mark.parametrize(
    ("policy", "attempts", "age", "gives_up"),
    [
        (Policy(0.5, 30.0, max_attempts=3), 2, 10.0, False),
        (Policy(0.5, 30.0, max_attempts=3), 3, 10.0, True),
        (Policy(0.5, 30.0, max_age=60.0), 50, 59.9, False),
        (Policy(0.5, 30.0, max_age=60.0), 1, 60.0, True),
        (Policy(0.5, 30.0, max_attempts=100, max_age=60.0), 1, 61.0, True),
        (Policy(0.5, 30.0), 10_000, 1e9, False),  # no rule: retry for ever
    ],
)
def test_a_row_past_max_attempts_or_max_age_gives_up_and_is_dead_lettered_naming_the_rule(
    policy: Policy, attempts: int, age: float, gives_up: bool
) -> None:
    decision = settle([row(1, attempts, created_at=NOW - age)], Outcome(Verdict.RETRY, 503, "HTTP 503: busy"), policy)
    assert decision.breaker is Breaker.FAILURE
    if gives_up:
        reason = f"gave up (max_attempts={policy.max_attempts}, max_age={policy.max_age}): HTTP 503: busy"
        assert decision.settlement.dead == [DeadLetter(1, 503, "HTTP 503: busy", reason)]
        assert decision.reason == reason and not decision.settlement.retry
    else:
        assert [r.id for r in decision.settlement.retry] == [1] and not decision.settlement.dead


def test_only_the_rows_past_the_rule_give_up_and_a_refused_key_says_auth_in_the_reason() -> None:
    policy = Policy(0.5, 30.0, max_attempts=2)
    decision = settle([row(1, attempts=2), row(2, attempts=1)], Outcome(Verdict.AUTH, 401, "HTTP 401: key"), policy)
    assert [d.id for d in decision.settlement.dead] == [1]
    assert decision.settlement.dead[0].reason == "gave up (max_attempts=2, max_age=None): auth: HTTP 401: key"
    assert [r.id for r in decision.settlement.retry] == [2]


def test_long_answers_are_cut_to_what_the_dead_letter_table_keeps() -> None:
    detail = "x" * (KEEP_DETAIL_CHARS * 2)
    dead = settle([row(1)], Outcome(Verdict.REJECT, 400, detail)).settlement.dead[0]
    assert dead.response is not None and len(dead.response) == KEEP_DETAIL_CHARS
    assert len(dead.reason) == KEEP_DETAIL_CHARS
    assert len(settle([row(1)], Outcome(Verdict.RETRY, 503, detail)).settlement.retry[0].error) == KEEP_DETAIL_CHARS


def test_an_answer_with_no_text_keeps_no_response() -> None:
    assert settle([row(1)], Outcome(Verdict.REJECT, 400, "")).settlement.dead[0].response is None
