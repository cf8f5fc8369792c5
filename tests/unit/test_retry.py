"""The retry policy, table by table: what a status means, how long a Retry-After asks for, backoff bounds, and the
sink-wide backoff state that keeps an outage from costing one request per row."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from shipper.core.retry import (
    AUTH_INITIAL_PAUSE,
    AUTH_MAX_PAUSE,
    MAX_RETRY_AFTER,
    SinkBackoff,
    Verdict,
    auth_pause,
    backoff,
    classify_status,
    parse_retry_after,
)

NOW = datetime(1994, 11, 6, 8, 49, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (599, Verdict.RETRY),
        (400, Verdict.REJECT),
        # The credential refused, not the record: the forwarder decides by whose key it was.
        (401, Verdict.AUTH),
        (403, Verdict.AUTH),
        (404, Verdict.REJECT),
        (409, Verdict.REJECT),
        (413, Verdict.REJECT),
        (422, Verdict.REJECT),
        (451, Verdict.REJECT),
        # Redirects are never followed (a request goes only to the base URL), so they cannot count as delivered.
        (301, Verdict.REJECT),
        (302, Verdict.REJECT),
        (304, Verdict.REJECT),
    ],
)
def test_classify_status_any_2xx_delivers_408_429_5xx_retry_401_403_auth_other_codes_reject(
    status: int, verdict: Verdict
) -> None:
    assert classify_status(status) is verdict


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (201, Verdict.DELIVERED),
        (200, Verdict.REJECT),  # a 2xx outside the vendor's exact set is not a delivery
        (204, Verdict.REJECT),
        (429, Verdict.RETRY),  # retryable codes stay retryable
        (503, Verdict.RETRY),
        (400, Verdict.REJECT),
        (401, Verdict.AUTH),
    ],
)
def test_classify_status_with_an_exact_success_set_delivers_only_those_codes(status: int, verdict: Verdict) -> None:
    assert classify_status(status, frozenset({201})) is verdict


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("3600", 3600.0),
        ("3601", MAX_RETRY_AFTER),  # capped
        ("999999999", MAX_RETRY_AFTER),
        # The three HTTP-date forms RFC 9110 requires a recipient to accept, 37 s after NOW.
        ("Sun, 06 Nov 1994 08:49:37 GMT", 37.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 37.0),
        ("Sun Nov  6 08:49:37 1994", 37.0),
        ("Sun, 06 Nov 1994 08:48:00 GMT", 0.0),  # a date in the past means now, never negative
        ("Sun, 06 Nov 2094 08:49:37 GMT", MAX_RETRY_AFTER),  # capped
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("1.5", None),  # delta-seconds is an integer
        ("-1", None),
        ("10s", None),
        ("Sun, 99 Nov 1994 08:49:37 GMT", None),
        # Unicode digits that are not ASCII: str.isdigit() says yes, float() says no. Unreadable, not a crash.
        ("\u00b2", None),
        ("\u2460", None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates_caps_them_and_ignores_garbage(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_is_full_jitter_within_zero_and_the_capped_exponential(attempt: int) -> None:
    initial, cap = 0.5, 30.0
    ceiling = min(cap, initial * 2**attempt)
    rng = random.Random(attempt)
    samples = [backoff(attempt, initial, cap, rng) for _ in range(2000)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter spreads over the whole range (not "ceiling plus a little"): both ends are visited.
    assert min(samples) < ceiling * 0.05
    assert max(samples) > ceiling * 0.95


def test_backoff_is_capped_even_for_huge_attempt_numbers() -> None:
    rng = random.Random(7)
    assert all(0.0 <= backoff(n, 0.5, 30.0, rng) <= 30.0 for n in (63, 64, 1000, 10**6))


def test_backoff_is_reproducible_with_a_seeded_random() -> None:
    first = [backoff(n, 0.1, 5.0, random.Random(42)) for n in range(8)]
    second = [backoff(n, 0.1, 5.0, random.Random(42)) for n in range(8)]
    assert first == second


def test_sink_backoff_counts_concurrent_failures_of_one_generation_once() -> None:
    state = SinkBackoff(initial=1.0, cap=60.0)
    rng = random.Random(1)
    generation = state.generation
    # Sixteen requests were in flight together when the remote went down; all of them fail.
    for _ in range(16):
        state.on_failure(generation, NOW, None, rng)
    assert state.failures == 1
    assert state.failing
    # The next probe belongs to the new generation and counts.
    state.on_failure(state.generation, NOW, None, rng)
    assert state.failures == 2


def test_sink_backoff_pause_grows_within_the_capped_exponential() -> None:
    state = SinkBackoff(initial=0.5, cap=4.0)
    rng = random.Random(3)
    for failure in range(10):
        pause = state.on_failure(state.generation, NOW + failure * 100, None, rng)
        assert 0.0 <= pause <= min(4.0, 0.5 * 2**failure)
        assert state.paused_until == pytest.approx(NOW + failure * 100 + pause)


def test_sink_backoff_retry_after_wins_over_the_computed_backoff() -> None:
    state = SinkBackoff(initial=0.01, cap=0.05)
    pause = state.on_failure(state.generation, NOW, 7.0, random.Random(1))
    assert pause == 7.0
    assert state.paused_until == NOW + 7.0


def test_sink_backoff_retry_after_from_a_stale_generation_still_extends_the_pause() -> None:
    state = SinkBackoff(initial=0.01, cap=0.05)
    rng = random.Random(1)
    old = state.generation
    state.on_failure(old, NOW, None, rng)
    assert state.failures == 1
    pause = state.on_failure(old, NOW, 9.0, rng)
    assert state.failures == 1  # not counted twice
    assert pause == 9.0


def test_sink_backoff_a_short_retry_after_never_shortens_a_longer_pause() -> None:
    state = SinkBackoff(initial=0.01, cap=0.05)
    rng = random.Random(1)
    state.on_failure(state.generation, NOW, 30.0, rng)
    pause = state.on_failure(state.generation, NOW, 1.0, rng)
    assert pause == 30.0


def test_sink_backoff_on_success_resets_and_reports_recovery_once() -> None:
    state = SinkBackoff(initial=1.0, cap=60.0)
    rng = random.Random(1)
    assert state.on_success() is False  # nothing was failing
    state.on_failure(state.generation, NOW, None, rng)
    state.on_failure(state.generation, NOW, None, rng)
    assert state.on_success() is True
    assert state.failures == 0
    assert state.paused_until == 0.0
    assert not state.failing
    assert state.on_success() is False
    # After recovery the exponential starts again from the first step.
    pause = state.on_failure(state.generation, NOW, None, rng)
    assert 0.0 <= pause <= 1.0


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 63, 1000])
def test_auth_pause_is_never_short_and_capped_at_five_minutes(attempt: int) -> None:
    ceiling = min(AUTH_MAX_PAUSE, AUTH_INITIAL_PAUSE * 2.0 ** min(attempt, 62))
    rng = random.Random(attempt)
    samples = [auth_pause(attempt, rng) for _ in range(500)]
    # A key is fixed by a person: at least half the ceiling (5 s at first), so a bad key costs few requests.
    assert all(ceiling / 2 <= s <= ceiling for s in samples)
    assert all(s <= AUTH_MAX_PAUSE for s in samples)


def test_a_refused_key_reads_auth_failed_whatever_the_count_and_a_success_or_other_failure_clears_it() -> None:
    state = SinkBackoff(initial=0.01, cap=0.05, threshold=2)
    rng = random.Random(1)
    for step in range(4):
        pause = state.on_failure(state.generation, NOW, None, rng, auth=True)
        assert pause >= AUTH_INITIAL_PAUSE / 2  # the slow pace, not the sink's 50 ms cap
        assert state.state(NOW) == "auth_failed", step  # past the threshold too: the cause is the key
    state.on_failure(state.generation, NOW, None, rng)  # then a 503: the remote's trouble now
    assert state.state(NOW + 3600) == "open"
    state.on_failure(state.generation, NOW, None, rng, auth=True)
    assert state.on_success() is True
    assert state.state(NOW) == "up"
    assert not state.auth_failed
