"""What an outcome means for the rows that were sent, as one pure function: delivered, split, retry at a time, or
dead-letter with a reason, and what it tells the sink-wide breaker.

The rules, in the order `decide` applies them:
- a refused batch (413, or any other final no to more than one row) is split in halves, to find the row(s) at fault;
  a 413 also means later batches should be smaller;
- a final no to one bundle (several records in one row): it goes back to the queue as its records, to be sent
  apart, as a refused batch is split (a 413 shrinks later batches here too);
- delivered: the rows are gone, with any ids the remote taught; the breaker closes;
- a final no to one row (the remote's, or the sink refusing to send it): dead-lettered; the remote is up;
- the remote refused the key the app sent: dead-lettered with reason `auth:` for a replay with a good key; the
  breaker is untouched (only that key is refused, the sink may be fine);
- anything else is worth another try: at `now` + backoff from the row's attempts (a `Retry-After` wins); a refused
  sink key holds the rows, due at once (the breaker's slow auth pace spaces the tries); a row past `max_attempts` or
  `max_age` gives up and is dead-lettered instead, naming the rule.
Not responsible for sending, for the breaker's arithmetic (retry.SinkBackoff) or for recording anything: the
forwarder applies the decision to the queue.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from shipper.core.retry import Outcome, Verdict, backoff
from shipper.core.rows import DeadLetter, Retry, Settlement, SpoolRow

# Remote answers are kept this long at most, in the dead-letter table and in `status`.
KEEP_DETAIL_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Policy:
    """A sink's retry and give-up settings, as plain values."""

    initial_backoff: float
    max_backoff: float
    max_attempts: int | None = None
    max_age: float | None = None

    def gives_up(self, row: SpoolRow, now: float) -> bool:
        """Whether this failed attempt of `row` (its `attempts` counting it) is the last one allowed."""
        return (self.max_attempts is not None and row.attempts >= self.max_attempts) or (
            self.max_age is not None and now - row.created_at >= self.max_age
        )

    @property
    def give_up_rule(self) -> str:
        return f"max_attempts={self.max_attempts}, max_age={self.max_age}"


class Breaker(enum.Enum):
    """What an outcome tells the sink-wide breaker."""

    SUCCESS = "success"  # the remote answered sensibly (a delivery or a final no): close it
    FAILURE = "failure"  # the remote is failing: count it, pause
    KEY_REFUSED = "key_refused"  # the remote refused the sink's own key: pause at the slow auth pace
    UNCHANGED = "unchanged"  # only the key one app sent is refused: the sink's pace stays as it is


@dataclass(frozen=True, slots=True)
class Split:
    """Send these halves separately; `too_large`: the remote said 413, so lease smaller batches from now on."""

    first: Sequence[SpoolRow]
    second: Sequence[SpoolRow]
    too_large: bool


@dataclass(frozen=True, slots=True)
class Settle:
    """Record `settlement`; `reason` says why rows were dead-lettered (None when none were)."""

    settlement: Settlement
    breaker: Breaker
    reason: str | None = None


def decide(
    rows: Sequence[SpoolRow], outcome: Outcome, policy: Policy, now: float, rng: random.Random
) -> Split | Settle:
    """What to do with the rows of one send, given what came of it. `now` is epoch seconds; `rng` jitters backoff."""
    if outcome.verdict is Verdict.REJECT and len(rows) > 1:
        half = len(rows) // 2
        return Split(rows[:half], rows[half:], too_large=outcome.status == 413)
    if outcome.verdict is Verdict.REJECT and rows[0].records > 1:  # a bundle refused whole: find the record at fault
        return Settle(Settlement(unbundled=[rows[0].id]), Breaker.SUCCESS)
    if outcome.verdict is Verdict.DELIVERED:
        learned = [(rows[0].sink, local, remote) for local, remote in outcome.learned]
        delivered = [row.id for row in rows] + list(outcome.consumed)
        return Settle(Settlement(delivered=delivered, learned=learned), Breaker.SUCCESS)
    if outcome.verdict is Verdict.REJECT:
        where = "rejected by the remote" if outcome.status is not None else "refused before sending"
        return _dead(rows, outcome, f"{where}: {outcome.detail}", Breaker.SUCCESS)
    if outcome.verdict is Verdict.AUTH and outcome.app_key:
        reason = f"auth: the remote refused the API key the app sent: {outcome.detail}"
        return _dead(rows, outcome, reason, Breaker.UNCHANGED)
    return _retry(rows, outcome, policy, now, rng)


def retry_delay(row: SpoolRow, outcome: Outcome, policy: Policy, rng: random.Random) -> float:
    """How long a failed row waits: the remote's `Retry-After`, else full-jitter backoff from its attempts; a refused
    sink key holds it due at once (the breaker paces the sink, and a fixed key is used as soon as it arrives)."""
    if outcome.verdict is Verdict.AUTH:
        return 0.0
    if outcome.retry_after is not None:
        return outcome.retry_after
    return backoff(row.attempts - 1, policy.initial_backoff, policy.max_backoff, rng)


def _retry(rows: Sequence[SpoolRow], outcome: Outcome, policy: Policy, now: float, rng: random.Random) -> Settle:
    auth = outcome.verdict is Verdict.AUTH
    breaker = Breaker.KEY_REFUSED if auth else Breaker.FAILURE
    expired = [row for row in rows if policy.gives_up(row, now)]
    error = outcome.detail[:KEEP_DETAIL_CHARS]
    retry = [
        Retry(row.id, now + retry_delay(row, outcome, policy, rng), error, outcome.unanswered)
        for row in rows
        if row not in expired
    ]
    if not expired:
        return Settle(Settlement(retry=retry), breaker)
    reason = f"gave up ({policy.give_up_rule}): {'auth: ' if auth else ''}{outcome.detail}"
    dead = _dead(expired, outcome, reason, breaker)
    return Settle(Settlement(retry=retry, dead=dead.settlement.dead), breaker, dead.reason)


def _dead(rows: Sequence[SpoolRow], outcome: Outcome, reason: str, breaker: Breaker) -> Settle:
    response = outcome.detail[:KEEP_DETAIL_CHARS] or None
    kept = reason[:KEEP_DETAIL_CHARS]
    return Settle(Settlement(dead=[DeadLetter(row.id, outcome.status, response, kept) for row in rows]), breaker, kept)
