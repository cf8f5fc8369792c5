"""Retry policy, in one place and pure: what a response means, how long to wait, and the sink-wide backoff state.

408, 429, 5xx, timeouts and connection errors are worth retrying; any other non-success status is the remote saying
no for good, so the row goes to the dead-letter table. Backoff is exponential, capped, with full jitter; a
`Retry-After` from the remote wins. Not responsible for I/O: the forwarder applies these decisions.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

# Honour a remote's Retry-After up to an hour: longer is more likely a misconfiguration than a plan.
MAX_RETRY_AFTER = 3600.0


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECT = "reject"


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


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or 500 <= status <= 599


def classify_status(status: int, success: frozenset[int] | None = None) -> Verdict:
    """`success` lists the exact codes a vendor requires; None means any 2xx."""
    ok = status in success if success is not None else 200 <= status <= 299
    if ok:
        return Verdict.DELIVERED
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

    def on_success(self) -> bool:
        """Returns True when this ends a failing period."""
        recovered = self.failures > 0
        self.failures = 0
        self.paused_until = 0.0
        self.failing_since = None
        return recovered

    def on_failure(self, generation: int, now: float, retry_after: float | None, rng: random.Random) -> float:
        """Count a failure of a request sent in `generation`; returns the pause now in force (seconds)."""
        if self.failing_since is None:
            self.failing_since = now
        if generation == self.generation:
            self.failures += 1
            self.generation += 1
            delay = retry_after if retry_after is not None else backoff(self.failures - 1, self.initial, self.cap, rng)
            self.paused_until = max(self.paused_until, now + delay)
        elif retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)
        return max(0.0, self.paused_until - now)

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def state(self, now: float) -> str:
        """`up`; `open` past `threshold` failures; else `backing_off` while paused, `probing` while a probe is out."""
        if not self.failing:
            return "up"
        if self.failures >= self.threshold:
            return "open"
        return "backing_off" if self.paused_until > now else "probing"
