"""The per-sink delivery loop: lease rows, send them with bounded concurrency, settle each outcome in the queue.

A row leaves the queue only when its sink says it was delivered (or it is dead-lettered), so a crash at any point
means redelivery, never loss. Rows of one key go one at a time in id order (the lease guarantees it); everything
else flows in parallel. After a failure the whole sink pauses (SinkBackoff) and then probes with a single request,
so an outage costs a handful of requests per backoff step rather than one per row. The loop only applies pure
decisions: when to lease and how much (core/leasing.py: replay or batch mode), what an outcome means
(core/decide.py), how long to pause (core/retry.py), how many requests at once (core/concurrency.py); the clock and
the randomness are injected.
Not responsible for what a response means (the sink) or for telling operators (report.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence

from shipper.config import SinkConfig
from shipper.core.concurrency import AdaptiveLimit
from shipper.core.decide import KEEP_DETAIL_CHARS, Breaker, Policy, Settle, Split, decide
from shipper.core.leasing import Announced, Limits, Mode, batch_hold, idle_wait, lease_limit, wakes
from shipper.core.retry import Outcome, SinkBackoff, Verdict
from shipper.core.rows import Retry, Settlement, SpoolRow
from shipper.errors import SpoolError
from shipper.forward.clock import Clock, SystemClock
from shipper.forward.report import Report, SinkCounters
from shipper.queue.base import Leaser
from shipper.sinks.base import Sink

log = logging.getLogger(__name__)

SETTLE_RETRY = 1.0
# Answers that mean "slow down": the adaptive limit shrinks on them.
PUSH_BACK = frozenset({429, 503})


class Forwarder:
    def __init__(
        self,
        spool: Leaser,
        sink: Sink,
        policy: SinkConfig,
        rng: random.Random | None = None,
        observe: Callable[[float], None] | None = None,
        counters: SinkCounters | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.sink = sink
        self.report = Report(log, sink.name, counters or SinkCounters())
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # epoch seconds, so `status` can say how old the error is
        self.backoff = SinkBackoff(policy.retry_initial_backoff, policy.retry_max_backoff, policy.breaker_threshold)
        self.adaptive = AdaptiveLimit(sink.concurrency)
        self._adaptive_on = policy.adaptive_concurrency and sink.concurrency > 1
        self._policy = Policy(
            policy.retry_initial_backoff, policy.retry_max_backoff, policy.max_attempts, policy.max_age
        )
        self._mode = Mode.of(sink.batching.max_records)
        self._limits = Limits(sink.batching.max_records, sink.batching.max_bytes)
        self._spool = spool
        self._observe = observe
        self._rng = rng or random.Random()
        self._clock: Clock = clock or SystemClock()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._announced = Announced()
        self._backlog = True  # rows may be waiting from before a restart
        self._inflight: dict[asyncio.Task[None], Sequence[SpoolRow]] = {}
        self._ready: deque[SpoolRow] = deque()  # leased ahead, not sent yet (replay mode)

    @property
    def counters(self) -> SinkCounters:
        return self.report.counters

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def concurrency_limit(self) -> int:
        if self.backoff.failing:
            return 1
        return self.adaptive.value if self._adaptive_on else self.sink.concurrency

    def flush_logs(self) -> None:
        self.report.flush()

    def stop(self) -> None:
        """Lease nothing more; in-flight sends carry on until `drain`."""
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        self._spool.watch(self.sink.name, self._on_append)
        while not self._stopped.is_set():
            try:
                await self._step()
            except SpoolError as exc:
                self.report.spool_trouble("cannot use the spool", exc)
                await self._wait(1.0)

    async def drain(self, timeout: float | None) -> int:
        """Wait for in-flight sends up to `timeout` (real seconds); cancel the rest and hand their rows back, due at
        once. Returns how many. A send cut short may have reached the remote: like a sender that died holding the
        lease, it counts as an attempt the remote may have taken, so its later delivery counts as a redelivery."""
        await self._release_ready()
        if not self._inflight:
            return 0
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        abandoned = [row.id for task in pending for row in self._inflight.get(task, ())]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if abandoned:
            now = self._clock.time()
            cut = [Retry(row_id, now, "cut short by a shutdown", unanswered=True) for row_id in abandoned]
            with contextlib.suppress(SpoolError):
                await self._spool.settle(retry=cut)
        return len(abandoned)

    async def _release_ready(self) -> None:
        """Hand back rows leased ahead: the sink is failing or stopping, and they should not wait on a lease. When
        the queue cannot record that (a full disk), keep them: they go out under their lease once the sink resumes,
        instead of sitting leased until `lease_timeout`."""
        rows = list(self._ready)
        self._ready.clear()
        if not rows:
            return
        try:
            await self._spool.settle(released=[row.id for row in rows])
        except SpoolError:
            self._ready.extendleft(reversed(rows))

    def _on_append(self, count: int) -> None:
        before, self._announced = self._announced, self._announced.add(count, self._clock.monotonic())
        if wakes(self._mode, before, self._announced, self._limits.records):
            self._wake.set()

    async def _wait(self, timeout: float | None) -> None:
        self._wake.clear()
        await self._clock.wait(self._wake, timeout)

    async def _step(self) -> None:
        paused = self.backoff.paused_until - self._clock.time()
        free = self.concurrency_limit - len(self._inflight)
        if paused > 0 or free <= 0:
            await self._wait(paused if paused > 0 else None)
        elif self._mode is Mode.REPLAY and self._ready:
            for _ in range(min(free, len(self._ready))):
                self._spawn([self._ready.popleft()])
        elif self._mode is Mode.REPLAY or await self._batch_due():
            await self._lease(lease_limit(self._mode, free, self._limits.records))

    async def _batch_due(self) -> bool:
        """Whether a batch may be leased now; otherwise hold as batch_hold says, and think again."""
        now, timeout = self._clock.monotonic(), self.sink.batching.timeout
        hold = batch_hold(self._announced, self._backlog, self._stopped.is_set(), self._limits.records, timeout, now)
        if hold is None:
            return True
        await self._wait(hold.seconds)
        if hold.quiet:  # a quiet interval: look for retries that came due
            self._backlog = self._announced.count == 0
        return False

    async def _lease(self, limit: int) -> None:
        self._announced = Announced()
        self._wake.clear()
        lease = await self._spool.lease(self.sink.name, limit, self._limits.bytes)
        self._backlog = len(lease.rows) >= limit
        if not lease.rows:
            await self._wait(idle_wait(lease.next_due, self._clock.time()))
        elif self._mode is Mode.BATCH:
            self._spawn(lease.rows)
        else:
            self._ready.extend(lease.rows)

    def _spawn(self, rows: Sequence[SpoolRow]) -> None:
        task = asyncio.create_task(self._deliver(rows, self.backoff.generation))
        self._inflight[task] = rows
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._backlog = True  # its rows' successors (same key) may be free now, and failed rows may be due
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("sink %s: delivery task failed", self.sink.name, exc_info=task.exception())

    async def _deliver(self, rows: Sequence[SpoolRow], generation: int) -> None:
        """Send, decide what came of it, apply that: split and send again, or settle."""
        outcome = await self._send(rows)
        decision = decide(rows, outcome, self._policy, self._clock.time(), self._rng)
        if isinstance(decision, Split):
            if decision.too_large:
                self._shrink_batches(rows)
            await self._deliver(decision.first, generation)
            await self._deliver(decision.second, generation)
            return
        await self._apply_breaker(decision, outcome, generation)
        if await self._record(decision.settlement):
            self.report.settled(rows, decision.settlement, decision.reason)

    async def _send(self, rows: Sequence[SpoolRow]) -> Outcome:
        started = self._clock.monotonic()
        try:
            outcome = await self.sink.send(rows)
        except Exception as exc:
            log.exception("sink %s: send raised; will retry", self.sink.name)
            # It may have raised after the remote answered (reading the answer): count a later delivery as a repeat.
            outcome = Outcome(Verdict.RETRY, None, f"internal error: {type(exc).__name__}", unanswered=True)
        elapsed = self._clock.monotonic() - started
        if self._observe is not None:
            self._observe(elapsed)
        if outcome.status is not None:
            self.adaptive.on_answer(elapsed, pushed_back=outcome.status in PUSH_BACK)
        if outcome.verdict is not Verdict.DELIVERED:
            self.last_error = outcome.detail[:KEEP_DETAIL_CHARS]
            self.last_error_at = self._clock.time()
        status = outcome.status if outcome.status is not None else "-"
        log.debug(
            "sink %s: %d row(s) sent in %.3fs: %s %s", self.sink.name, len(rows), elapsed, outcome.verdict.value, status
        )
        return outcome

    def _shrink_batches(self, rows: Sequence[SpoolRow]) -> None:
        """The remote found a batch too large (413): lease at most half of it from now on."""
        size = sum(len(row.body) for row in rows)
        self._limits = self._limits.shrunk(len(rows), size)
        log.warning(
            "sink %s: the remote refused a batch of %d records (%d bytes) as too large; batches now at most %d / %d",
            self.sink.name,
            len(rows),
            size,
            self._limits.records,
            self._limits.bytes,
        )

    async def _apply_breaker(self, decision: Settle, outcome: Outcome, generation: int) -> None:
        """Tell the sink-wide breaker what the outcome said, and say so in the log."""
        if decision.breaker is Breaker.SUCCESS:
            if self.backoff.on_success():
                self.report.recovered()
        elif decision.breaker is Breaker.UNCHANGED:
            self.report.app_key_refused(outcome.status)
        else:
            await self._release_ready()
            now = self._clock.time()
            auth = decision.breaker is Breaker.KEY_REFUSED
            was_open = self.backoff.state(now) == "open"
            pause = self.backoff.on_failure(generation, now, outcome.retry_after, self._rng, auth)
            if auth:
                self.report.sink_key_refused(outcome.detail, pause)
            else:
                opened = not was_open and self.backoff.state(now + pause) == "open"
                self.report.failing(outcome.detail, pause, self.backoff.failures if opened else None)

    async def _record(self, settlement: Settlement) -> bool:
        """Settle in the queue; keep the outcome until the queue takes it (a full disk passes): sending again would
        be a repeat. Gives up (False) only at a stop, when the lease hands the rows back later."""
        while True:
            try:
                await self._spool.settle(
                    settlement.delivered, settlement.retry, settlement.dead, learned=settlement.learned
                )
                return True
            except SpoolError as exc:
                self.report.spool_trouble("cannot record an outcome yet", exc)
                if self._stopped.is_set():
                    return False
                await self._clock.wait(self._stopped, SETTLE_RETRY)
