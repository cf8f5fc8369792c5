"""Retry policy, in one place and pure: what a response means, how long to wait, and the sink-wide backoff state.

408, 429, 5xx, timeouts and connection errors are worth retrying; 401 and 403 refuse the credential, not the record
(`AUTH`: what becomes of the row depends on whose key it was, decide.py's call); any other non-success status is
the remote saying no for good, so the row goes to the dead-letter table. Backoff is exponential, capped, with full
jitter; a `Retry-After` from the remote wins; a refused key is retried at a slow, capped pace (a key is fixed by a
person, not by waiting). Not responsible for I/O, nor for what an outcome means for its rows (decide.py).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# Honour a remote's Retry-After up to an hour: longer is more likely a misconfiguration than a plan.
MAX_RETRY_AFTER = 3600.0
# A refused key: probe again after 5-10 s, doubling up to 2.5-5 min, until someone fixes it.
AUTH_INITIAL_PAUSE = 10.0
AUTH_MAX_PAUSE = 300.0
AUTH_STATUSES = frozenset({401, 403})


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECT = "reject"
    AUTH = "auth"  # the remote refused the credential (401, 403): the record itself may be fine


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one send came to; `detail` is a short, secret-free description for logs and the dead-letter table.

    `unanswered` marks a send that went out and got no answer (a timeout, a connection reset after sending): the
    remote may have taken it, so delivering the row later may be a repeat. A refused connection or any answer, even
    a 503, is not: the remote either never saw the request or said it did not take it.
    """

    verdict: Verdict
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None
    learned: tuple[tuple[str, str], ...] = ()  # (id told to the app, id the remote assigned), from a create
    unanswered: bool = False
    app_key: bool = False  # the request carried the key the app sent with the record, not the sink's own
    consumed: tuple[int, ...] = ()  # other queued rows the send carried (an LLM span's log records): gone with it


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or 500 <= status <= 599


def classify_status(status: int, success: frozenset[int] | None = None) -> Verdict:
    """`success` lists the exact codes a vendor requires; None means any 2xx."""
    ok = status in success if success is not None else 200 <= status <= 299
    if ok:
        return Verdict.DELIVERED
    if status in AUTH_STATUSES:
        return Verdict.AUTH
    return Verdict.RETRY if is_retryable_status(status) else Verdict.REJECT


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - now), MAX_RETRY_AFTER)


def backoff(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, initial * 2**attempt)], attempt counting from 0."""
    ceiling = min(cap, initial * (2.0 ** min(attempt, 62)))
    return rng.uniform(0.0, ceiling)


def auth_pause(attempt: int, rng: random.Random) -> float:
    """After a refused key: half the ceiling plus jitter, so a bad key never costs more than one probe per 5 s."""
    ceiling = min(AUTH_MAX_PAUSE, AUTH_INITIAL_PAUSE * (2.0 ** min(attempt, 62)))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


@dataclass(slots=True)
class SinkBackoff:
    """Sink-wide pause after failures, so an outage costs one probe per backoff step, not one per row.

    Failures of requests that were already in flight together count once (they share a generation); after a pause
    the forwarder sends a single probe, and the first success resets everything.
    """

    initial: float
    cap: float
    threshold: int = 5  # consecutive failures after which the circuit counts as open
    failures: int = 0
    generation: int = 0
    paused_until: float = 0.0
    failing_since: float | None = None
    auth_failed: bool = False  # the latest failure was the remote refusing the sink's key

    def on_success(self) -> bool:
        """Returns True when this ends a failing period."""
        recovered = self.failures > 0
        self.failures = 0
        self.paused_until = 0.0
        self.failing_since = None
        self.auth_failed = False
        return recovered

    def on_failure(
        self, generation: int, now: float, retry_after: float | None, rng: random.Random, auth: bool = False
    ) -> float:
        """Count a failure of a request sent in `generation` (`auth`: the key was refused); returns the pause now in
        force (seconds)."""
        if self.failing_since is None:
            self.failing_since = now
        self.auth_failed = auth
        if generation == self.generation:
            self.failures += 1
            self.generation += 1
            if auth:
                delay = auth_pause(self.failures - 1, rng)
            elif retry_after is not None:
                delay = retry_after
            else:
                delay = backoff(self.failures - 1, self.initial, self.cap, rng)
            self.paused_until = max(self.paused_until, now + delay)
        elif retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)
        return max(0.0, self.paused_until - now)

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def state(self, now: float) -> str:
        """`up`; `auth_failed` while the remote refuses the sink's key; `open` past `threshold` failures; else
        `backing_off` while paused, `probing` while a probe is out."""
        if not self.failing:
            return "up"
        if self.auth_failed:
            return "auth_failed"
        if self.failures >= self.threshold:
            return "open"
        return "backing_off" if self.paused_until > now else "probing"
