"""`Throttled`, the outage log limiter: the first line at once, then at most one line per interval saying how many
were folded, and `reset` (on recovery) hands back the count that was never printed. A fake clock drives it."""

from __future__ import annotations

import logging

import pytest

from shipper import logs
from shipper.logs import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(logs.time, "monotonic", fake)
    return fake


@pytest.fixture
def captured() -> list[logging.LogRecord]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.throttled")
    logger.handlers[:] = [Keep()]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return records


def test_an_outage_of_95_seconds_with_one_failure_a_second_logs_four_lines_with_counts(
    clock: Clock, captured: list[logging.LogRecord]
) -> None:
    throttled = Throttled(logging.getLogger("tests.throttled"), interval=30.0)
    for second in range(96):
        clock.now = 1000.0 + second
        throttled.warning("sink %s: delivery failing (%s)", "remote", "HTTP 503")
    messages = [record.getMessage() for record in captured]
    assert messages == [
        "sink remote: delivery failing (HTTP 503)",
        "sink remote: delivery failing (HTTP 503) (and 29 more like it)",
        "sink remote: delivery failing (HTTP 503) (and 29 more like it)",
        "sink remote: delivery failing (HTTP 503) (and 29 more like it)",
    ]
    assert all(record.levelno == logging.WARNING for record in captured)
    # Seconds 91-95 were folded and not printed yet: recovery reports them.
    assert throttled.reset() == 5


def test_after_a_reset_the_next_failure_is_logged_at_once(clock: Clock, captured: list[logging.LogRecord]) -> None:
    throttled = Throttled(logging.getLogger("tests.throttled"), interval=30.0)
    throttled.warning("failing")
    clock.now += 1
    throttled.warning("failing")
    assert throttled.reset() == 1
    clock.now += 1
    throttled.warning("failing again")
    assert [record.getMessage() for record in captured] == ["failing", "failing again"]
    assert throttled.reset() == 0
