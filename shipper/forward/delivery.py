"""One send and what comes of it: send the rows, ask core/decide.py what the outcome means, and apply that: send the
halves of a refused batch, tell the breaker, settle in the queue, count and log.

An outcome is kept until the queue takes it (a full disk passes): sending again would be a repeat.
Not responsible for when to send or how many at once (forwarder.py), nor for what a response means (the sink).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shipper.core.concurrency import AdaptiveLimit
from shipper.core.decide import KEEP_DETAIL_CHARS, Breaker, Policy, Settle, Split, decide
from shipper.core.leasing import Limits
from shipper.core.retry import Outcome, SinkBackoff, Verdict
from shipper.core.rows import Settlement, SpoolRow
from shipper.errors import SpoolError
from shipper.forward.clock import Clock
from shipper.forward.report import Report
from shipper.queue.base import Leaser
from shipper.sinks.base import Sink

SETTLE_RETRY = 1.0
# Answers that mean "slow down": the adaptive limit shrinks on them.
PUSH_BACK = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Context:
    """What a delivery reads and reports to, shared with the loop that starts it."""

    spool: Leaser
    sink: Sink
    policy: Policy
    backoff: SinkBackoff
    adaptive: AdaptiveLimit
    report: Report
    clock: Clock
    rng: random.Random
    stopped: asyncio.Event
    observe: Callable[[float], None] | None
    on_failure: Callable[[], Awaitable[None]]  # the sink is failing: hand back what was leased ahead
    log: logging.Logger  # the forwarder's: one logger name for all of a sink's delivery lines


class Delivery:
    def __init__(self, context: Context, limits: Limits) -> None:
        self.limits = limits  # what a batch may carry now: a 413 shrinks it
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # epoch seconds, so `status` can say how old the error is
        self._c = context

    async def deliver(
        self, rows: Sequence[SpoolRow], generation: int, answered: Callable[[], None] | None = None
    ) -> None:
        """Send, decide what came of it, apply that: split and send again, or settle. `answered` is told when the
        remote is done with this delivery and only the settlement is left (a split keeps it busy until the end)."""
        c = self._c
        outcome = await self._send(rows)
        decision = decide(rows, outcome, c.policy, c.clock.time(), c.rng)
        if isinstance(decision, Split):
            if decision.too_large:
                self._shrink(rows)
            await self.deliver(decision.first, generation)
            await self.deliver(decision.second, generation)
            return
        if decision.settlement.unbundled and outcome.status == 413:
            self._shrink(rows)
        await self._tell_breaker(decision, outcome, generation)
        if answered is not None:
            answered()
        if await self._record(decision.settlement):
            c.report.settled(rows, decision.settlement, decision.reason)

    async def _send(self, rows: Sequence[SpoolRow]) -> Outcome:
        c = self._c
        started = c.clock.monotonic()
        try:
            outcome = await c.sink.send(rows)
        except Exception as exc:
            c.log.exception("sink %s: send raised; will retry", c.sink.name)
            # It may have raised after the remote answered (reading the answer): count a later delivery as a repeat.
            outcome = Outcome(Verdict.RETRY, None, f"internal error: {type(exc).__name__}", unanswered=True)
        elapsed = c.clock.monotonic() - started
        if c.observe is not None:
            c.observe(elapsed)
        if outcome.status is not None:
            c.adaptive.on_answer(elapsed, pushed_back=outcome.status in PUSH_BACK)
        if outcome.verdict is not Verdict.DELIVERED:
            self.last_error = outcome.detail[:KEEP_DETAIL_CHARS]
            self.last_error_at = c.clock.time()
        status = outcome.status if outcome.status is not None else "-"
        c.log.debug(
            "sink %s: %d row(s) sent in %.3fs: %s %s", c.sink.name, len(rows), elapsed, outcome.verdict.value, status
        )
        return outcome

    def _shrink(self, rows: Sequence[SpoolRow]) -> None:
        """The remote found a batch too large (413): lease at most half of it from now on."""
        size = sum(len(row.body) for row in rows)
        records = sum(row.records for row in rows)
        self.limits = self.limits.shrunk(records, size)
        self._c.log.warning(
            "sink %s: the remote refused a batch of %d records (%d bytes) as too large; batches now at most %d / %d",
            self._c.sink.name,
            records,
            size,
            self.limits.records,
            self.limits.bytes,
        )

    async def _tell_breaker(self, decision: Settle, outcome: Outcome, generation: int) -> None:
        """Tell the sink-wide breaker what the outcome said, and say so in the log."""
        c = self._c
        if decision.breaker is Breaker.SUCCESS:
            if c.backoff.on_success():
                c.report.recovered()
        elif decision.breaker is Breaker.UNCHANGED:
            c.report.app_key_refused(outcome.status)
        else:
            await c.on_failure()
            now = c.clock.time()
            auth = decision.breaker is Breaker.KEY_REFUSED
            was_open = c.backoff.state(now) == "open"
            pause = c.backoff.on_failure(generation, now, outcome.retry_after, c.rng, auth)
            if auth:
                c.report.sink_key_refused(outcome.detail, pause)
            else:
                opened = not was_open and c.backoff.state(now + pause) == "open"
                c.report.failing(outcome.detail, pause, c.backoff.failures if opened else None)

    async def _record(self, settlement: Settlement) -> bool:
        """Settle in the queue, trying again until it takes it. Gives up (False) only at a stop, when the lease hands
        the rows back later."""
        c = self._c
        while True:
            try:
                await c.spool.settle(
                    settlement.delivered,
                    settlement.retry,
                    settlement.dead,
                    learned=settlement.learned,
                    unbundled=settlement.unbundled,
                )
                return True
            except SpoolError as exc:
                c.report.spool_trouble("cannot record an outcome yet", exc)
                if c.stopped.is_set():
                    return False
                await c.clock.wait(c.stopped, SETTLE_RETRY)
