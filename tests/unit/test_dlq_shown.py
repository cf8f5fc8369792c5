"""How a dead letter is shown: RFC 3339 UTC times, and a reason that does not repeat the remote's answer."""

from __future__ import annotations

import pytest

from shipper.logs import rfc3339
from shipper.spool.reader import reason_alone


@pytest.mark.parametrize(
    ("reason", "response", "alone"),
    [
        ('rejected by the remote: HTTP 400: {"error": "x"}', 'HTTP 400: {"error": "x"}', "rejected by the remote"),
        ("gave up (after 5 attempts): HTTP 503: down", "HTTP 503: down", "gave up (after 5 attempts)"),
        # Both were cut to the same length: the reason holds only the start of the answer.
        ("rejected by the remote: HTTP 400: " + "a" * 10, "HTTP 400: " + "a" * 30, "rejected by the remote"),
        ("refused before sending: no API key", None, "refused before sending: no API key"),
        ("rejected by the remote: HTTP 401", "HTTP 403", "rejected by the remote: HTTP 401"),
    ],
)
def test_the_reason_drops_the_answer_that_response_already_holds(reason: str, response: str | None, alone: str) -> None:
    assert reason_alone(reason, response) == alone


def test_times_are_rfc3339_utc() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_764_633_600.25, "seconds") == "2025-12-02T00:00:00Z"
