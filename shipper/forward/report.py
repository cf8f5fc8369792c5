"""What a sink's delivery tells operators: its counters (for /metrics and `status`) and its log lines, throttled so
an outage costs one line per interval with a count, never one per row.

Not responsible for deciding anything (core/decide.py) or for the breaker's state (core/retry.SinkBackoff).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from shipper.core.rows import Settlement, SpoolRow
from shipper.logs import Throttled


@dataclass(slots=True)
class SinkCounters:
    delivered: int = 0
    redelivered: int = 0  # delivered rows an earlier attempt of which the remote may have taken (a repeat)
    retried: int = 0
    dead_lettered: int = 0
    auth_failures: int = 0  # sends the remote refused for their key (401, 403)


class Report:
    """Counters and throttled log lines of one sink, written to the forwarder's logger."""

    def __init__(self, log: logging.Logger, sink: str, counters: SinkCounters) -> None:
        self.counters = counters
        self._log = log
        self._sink = sink
        self._failing = Throttled(log)
        self._dead = Throttled(log)
        self._auth = Throttled(log)

    def settled(self, rows: Sequence[SpoolRow], settlement: Settlement, reason: str | None) -> None:
        """Count what a recorded settlement did to `rows`, in records (a bundle counts each record it carries)."""
        records = {row.id: row.records for row in rows}
        if settlement.delivered:
            self.counters.delivered += sum(records.get(row_id, 1) for row_id in settlement.delivered)
            self.counters.redelivered += sum(row.records for row in rows if row.unanswered)
        self.counters.retried += sum(records.get(r.id, 1) for r in settlement.retry)
        if settlement.dead:
            dead = sum(records.get(d.id, 1) for d in settlement.dead)
            self.counters.dead_lettered += dead
            self._dead.warning("sink %s: %d record(s) dead-lettered: %s", self._sink, dead, (reason or "")[:200])
        if settlement.unbundled:
            self._log.info(
                "sink %s: the remote refused a bundle of %d records whole; sending its records apart",
                self._sink,
                sum(records.get(row_id, 1) for row_id in settlement.unbundled),
            )

    def recovered(self) -> None:
        folded = self._failing.reset() + self._auth.reset()
        self._log.info("sink %s: remote recovered (%d failure lines folded)", self._sink, folded)

    def app_key_refused(self, status: int | None) -> None:
        self.counters.auth_failures += 1
        self._auth.warning(
            "sink %s: the remote refused the API key the app sent (HTTP %s); dead-lettered with reason auth:"
            " replay with a good key (shipper dlq replay --api-key-env VAR)",
            self._sink,
            status,
        )

    def sink_key_refused(self, detail: str, pause: float) -> None:
        self.counters.auth_failures += 1
        self._auth.warning(
            "sink %s: the remote refused the sink's API key (%s); rows held, next try in %.0fs:"
            " fix the key, then reload (an api_key_file) or restart",
            self._sink,
            detail[:200],
            pause,
        )

    def failing(self, detail: str, pause: float, opened_after: int | None) -> None:
        """A failed send; `opened_after`: the circuit just opened after this many consecutive failures."""
        if opened_after is not None:
            self._log.warning(
                "sink %s: circuit open after %d consecutive failures; probing one request at a time",
                self._sink,
                opened_after,
            )
        self._failing.warning("sink %s: delivery failing (%s); pausing %.2fs", self._sink, detail[:200], pause)

    def spool_trouble(self, what: str, exc: Exception) -> None:
        self._failing.warning("sink %s: %s: %s", self._sink, what, exc)

    def flush(self) -> None:
        """Say how many throttled lines were never printed, so a folded count is not lost at a stop."""
        for throttled, what in (
            (self._dead, "dead-letter"),
            (self._failing, "delivery failure"),
            (self._auth, "refused key"),
        ):
            folded = throttled.reset()
            if folded:
                self._log.warning("sink %s: %d more %s line(s) were folded", self._sink, folded, what)
