"""The per-sink delivery loop: lease rows, send them with bounded concurrency, settle each outcome in the spool.

A row leaves the spool only when its sink says it was delivered (or it is dead-lettered), so a crash at any point
means redelivery, never loss. Rows of one key go one at a time in id order (the spool's lease guarantees it);
everything else flows in parallel. After a failure the whole sink pauses (SinkBackoff) and then probes with a single
request, so an outage costs a handful of requests per backoff step rather than one per row. A refused key (401, 403)
is about the credential, not the record: refused with the sink's own key, the rows are held (retried at a slow pace,
state `auth_failed`) until a fixed key arrives by reload or restart; refused with the key the app sent, they are
dead-lettered with the reason `auth`, for `shipper dlq replay --api-key-env` to send again with a good key.
Not responsible for what a response means (the sink) or the backoff arithmetic (retry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shipper.config import SinkConfig
from shipper.core.rows import DeadLetter, Retry, SpoolRow
from shipper.errors import SpoolError
from shipper.forward.concurrency import AdaptiveLimit
from shipper.forward.retry import Outcome, SinkBackoff, Verdict, backoff
from shipper.logs import Throttled
from shipper.queue.base import Leaser
from shipper.sinks.base import Sink

log = logging.getLogger(__name__)

KEEP_DETAIL_CHARS = 2048
SETTLE_RETRY = 1.0
# Replay mode leases this many rows per free slot, so most sends need no lease of their own.
LEASE_AHEAD = 4
# Answers that mean "slow down": the adaptive limit shrinks on them.
PUSH_BACK = frozenset({429, 503})
# Rows can also appear without an append in this process (a dead-letter replay from the CLI): look now and then.
IDLE_POLL = 1.0


@dataclass(slots=True)
class SinkCounters:
    delivered: int = 0
    redelivered: int = 0  # delivered rows an earlier attempt of which the remote may have taken (a repeat)
    retried: int = 0
    dead_lettered: int = 0
    auth_failures: int = 0  # sends the remote refused for their key (401, 403)


class Forwarder:
    def __init__(
        self,
        spool: Leaser,
        sink: Sink,
        policy: SinkConfig,
        rng: random.Random | None = None,
        observe: Callable[[float], None] | None = None,
        counters: SinkCounters | None = None,
    ) -> None:
        self.sink = sink
        self.counters = counters or SinkCounters()
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # epoch seconds, so `status` can say how old the error is
        self._observe = observe
        self.backoff = SinkBackoff(policy.retry_initial_backoff, policy.retry_max_backoff, policy.breaker_threshold)
        self.adaptive = AdaptiveLimit(sink.concurrency)
        self._adaptive_on = policy.adaptive_concurrency and sink.concurrency > 1
        self._spool = spool
        self._policy = policy
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._added = 0
        self._stopping = False
        self._inflight: dict[asyncio.Task[None], Sequence[SpoolRow]] = {}
        self._failing_log = Throttled(log)
        self._batch_records = sink.batching.max_records
        self._backlog = True  # rows may be waiting from before a restart
        self._first_added: float | None = None
        self._batch_bytes = sink.batching.max_bytes
        self._dead_log = Throttled(log)
        self._auth_log = Throttled(log)
        self._ready: deque[SpoolRow] = deque()  # leased ahead, not sent yet (replay mode)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def concurrency_limit(self) -> int:
        if self.backoff.failing:
            return 1
        return self.adaptive.value if self._adaptive_on else self.sink.concurrency

    def flush_logs(self) -> None:
        """Say how many throttled lines were never printed, so a folded count is not lost at a stop."""
        logs = (
            (self._dead_log, "dead-letter"),
            (self._failing_log, "delivery failure"),
            (self._auth_log, "refused key"),
        )
        for throttled, what in logs:
            folded = throttled.reset()
            if folded:
                log.warning("sink %s: %d more %s line(s) were folded", self.sink.name, folded, what)

    def stop(self) -> None:
        """Lease nothing more; in-flight sends carry on until `drain`."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        self._spool.watch(self.sink.name, self._on_append)
        while not self._stopping:
            try:
                await self._step()
            except SpoolError as exc:
                self._failing_log.warning("sink %s: cannot use the spool: %s", self.sink.name, exc)
                await self._wait(1.0)

    async def drain(self, timeout: float | None) -> int:
        """Wait for in-flight sends up to `timeout`; cancel the rest and hand their rows back, due at once. Returns
        how many. A send cut short may have reached the remote: like a sender that died holding the lease, it counts
        as an attempt the remote may have taken, so its later delivery counts as a redelivery."""
        await self._release_ready()
        if not self._inflight:
            return 0
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        abandoned = [row.id for task in pending for row in self._inflight.get(task, ())]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if abandoned:
            now = time.time()
            cut = [Retry(row_id, now, "cut short by a shutdown", unanswered=True) for row_id in abandoned]
            with contextlib.suppress(SpoolError):
                await self._spool.settle(retry=cut)
        return len(abandoned)

    async def _release_ready(self) -> None:
        """Hand back rows leased ahead: the sink is failing or stopping, and they should not wait on a lease. When
        the spool cannot record that (a full disk), keep them: they go out under their lease once the sink resumes,
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
        """Wake the loop for what changes its plan: any row in replay mode; a batch's first row or a full batch."""
        first = self._first_added is None
        if first:
            self._first_added = time.monotonic()
        self._added += count
        if first or self.sink.batching.max_records == 1 or self._added >= self._batch_records:
            self._wake.set()

    async def _wait(self, timeout: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _step(self) -> None:
        now = time.time()
        if self.backoff.paused_until > now:
            await self._wait(self.backoff.paused_until - now)
            return
        capacity = self.concurrency_limit - len(self._inflight)
        if capacity <= 0:
            await self._wait(None)
            return
        batching = self.sink.batching
        if batching.max_records == 1 and self._ready:
            while capacity > 0 and self._ready:
                self._spawn([self._ready.popleft()])
                capacity -= 1
            return
        if batching.max_records > 1 and not await self._batch_ready():
            return
        self._added = 0
        self._first_added = None
        self._wake.clear()
        # Replay mode leases ahead, so a finished send is followed at once by the next without a lease of its own.
        limit = self._batch_records if batching.max_records > 1 else capacity * LEASE_AHEAD
        lease = await self._spool.lease(self.sink.name, limit, self._batch_bytes)
        rows = lease.rows
        self._backlog = len(rows) >= limit
        if not rows:
            due = IDLE_POLL if lease.next_due is None else min(IDLE_POLL, max(0.0, lease.next_due - time.time()))
            await self._wait(due)
            return
        if batching.max_records > 1:
            self._spawn(rows)
        else:
            self._ready.extend(rows)

    async def _batch_ready(self) -> bool:
        """Lease a batch only when it can be full, or its first record has waited `batch_timeout`, or rows may be
        waiting that no append announced (at start, after a send: retries and successors). Never lease to release."""
        if self._backlog or self._stopping:
            return True
        if self._added >= self._batch_records:
            return True
        if self._first_added is None:
            await self._wait(IDLE_POLL)
            self._backlog = self._added == 0  # a quiet second: look for retries that came due
            return False
        remaining = self._first_added + self.sink.batching.timeout - time.monotonic()
        if remaining <= 0:
            return True
        await self._wait(remaining)
        return False

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
        """Send, and settle what came of it; a refused batch is split in halves to find the row(s) at fault."""
        outcome = await self._send(rows)
        if outcome.verdict is Verdict.REJECT and len(rows) > 1:
            if outcome.status == 413:
                self._shrink_batches(rows)
            half = len(rows) // 2
            await self._deliver(rows[:half], generation)
            await self._deliver(rows[half:], generation)
            return
        while True:
            try:
                await self._settle(rows, outcome, generation)
                return
            except SpoolError as exc:
                # Keep the outcome until the spool takes it (a full disk passes): sending again would be a repeat.
                self._failing_log.warning("sink %s: cannot record an outcome yet: %s", self.sink.name, exc)
                if self._stopping:
                    return
                await asyncio.sleep(SETTLE_RETRY)

    async def _send(self, rows: Sequence[SpoolRow]) -> Outcome:
        started = time.monotonic()
        try:
            outcome = await self.sink.send(rows)
        except Exception as exc:
            log.exception("sink %s: send raised; will retry", self.sink.name)
            # It may have raised after the remote answered (reading the answer): count a later delivery as a repeat.
            outcome = Outcome(Verdict.RETRY, None, f"internal error: {type(exc).__name__}", unanswered=True)
        elapsed = time.monotonic() - started
        if self._observe is not None:
            self._observe(elapsed)
        if outcome.status is not None:
            self.adaptive.on_answer(elapsed, pushed_back=outcome.status in PUSH_BACK)
        if outcome.verdict is not Verdict.DELIVERED:
            self.last_error = outcome.detail[:KEEP_DETAIL_CHARS]
            self.last_error_at = time.time()
        log.debug(
            "sink %s: %d row(s) sent in %.3fs: %s %s",
            self.sink.name,
            len(rows),
            elapsed,
            outcome.verdict.value,
            outcome.status if outcome.status is not None else "-",
        )
        return outcome

    def _shrink_batches(self, rows: Sequence[SpoolRow]) -> None:
        """The remote found a batch too large (413): lease at most half of it from now on."""
        size = sum(len(row.body) for row in rows)
        self._batch_records = max(1, min(self._batch_records, len(rows) // 2))
        self._batch_bytes = max(1, min(self._batch_bytes, size // 2))
        log.warning(
            "sink %s: the remote refused a batch of %d records (%d bytes) as too large; batches now at most %d / %d",
            self.sink.name,
            len(rows),
            size,
            self._batch_records,
            self._batch_bytes,
        )

    async def _settle(self, rows: Sequence[SpoolRow], outcome: Outcome, generation: int) -> None:
        ids = [row.id for row in rows]
        if outcome.verdict is Verdict.DELIVERED:
            if self.backoff.on_success():
                folded = self._failing_log.reset() + self._auth_log.reset()
                log.info("sink %s: remote recovered (%d failure lines folded)", self.sink.name, folded)
            learned = [(self.sink.name, local, remote) for local, remote in outcome.learned]
            await self._spool.settle(delivered=ids, learned=learned)
            self.counters.delivered += len(ids)
            self.counters.redelivered += sum(1 for row in rows if row.unanswered)
        elif outcome.verdict is Verdict.REJECT:
            self.backoff.on_success()
            where = "rejected by the remote" if outcome.status is not None else "refused before sending"
            reason = f"{where}: {outcome.detail}"
            await self._dead_letter(rows, outcome, reason)
        elif outcome.verdict is Verdict.AUTH and outcome.app_key:
            # Only this app's key is refused (others may be fine): the sink's pace stays as it is.
            self.counters.auth_failures += 1
            self._auth_log.warning(
                "sink %s: the remote refused the API key the app sent (HTTP %s); dead-lettered with reason auth:"
                " replay with a good key (shipper dlq replay --api-key-env VAR)",
                self.sink.name,
                outcome.status,
            )
            await self._dead_letter(
                rows, outcome, f"auth: the remote refused the API key the app sent: {outcome.detail}"
            )
        else:
            await self._retry(rows, outcome, generation)

    async def _dead_letter(self, rows: Sequence[SpoolRow], outcome: Outcome, reason: str) -> None:
        response = outcome.detail[:KEEP_DETAIL_CHARS] or None
        await self._spool.settle(
            dead=[DeadLetter(row.id, outcome.status, response, reason[:KEEP_DETAIL_CHARS]) for row in rows]
        )
        self.counters.dead_lettered += len(rows)
        self._dead_log.warning("sink %s: %d row(s) dead-lettered: %s", self.sink.name, len(rows), reason[:200])

    async def _retry(self, rows: Sequence[SpoolRow], outcome: Outcome, generation: int) -> None:
        """Back off and try again later; a refused sink key holds the rows the same way, at the slow auth pace."""
        await self._release_ready()
        now = time.time()
        auth = outcome.verdict is Verdict.AUTH
        was_open = self.backoff.state(now) == "open"
        pause = self.backoff.on_failure(generation, now, outcome.retry_after, self._rng, auth)
        if auth:
            self.counters.auth_failures += 1
            self._auth_log.warning(
                "sink %s: the remote refused the sink's API key (%s); rows held, next try in %.0fs:"
                " fix the key, then reload (an api_key_file) or restart",
                self.sink.name,
                outcome.detail[:200],
                pause,
            )
        else:
            if not was_open and self.backoff.state(now + pause) == "open":
                log.warning(
                    "sink %s: circuit open after %d consecutive failures; probing one request at a time",
                    self.sink.name,
                    self.backoff.failures,
                )
            self._failing_log.warning(
                "sink %s: delivery failing (%s); pausing %.2fs", self.sink.name, outcome.detail[:200], pause
            )
        expired = self._expired(rows, now)
        if expired:
            reason = f"gave up ({self._give_up_rule()}): {'auth: ' if auth else ''}{outcome.detail}"
            await self._dead_letter(expired, outcome, reason)
        # Held rows are due at once: the sink's pause paces them, and a fixed key is used as soon as it arrives.
        retry = [
            Retry(
                row.id,
                now + (0.0 if auth else self._row_delay(row, outcome)),
                outcome.detail[:KEEP_DETAIL_CHARS],
                outcome.unanswered,
            )
            for row in rows
            if row not in expired
        ]
        if retry:
            await self._spool.settle(retry=retry)
            self.counters.retried += len(retry)

    def _row_delay(self, row: SpoolRow, outcome: Outcome) -> float:
        if outcome.retry_after is not None:
            return outcome.retry_after
        return backoff(row.attempts - 1, self._policy.retry_initial_backoff, self._policy.retry_max_backoff, self._rng)

    def _expired(self, rows: Sequence[SpoolRow], now: float) -> list[SpoolRow]:
        max_attempts, max_age = self._policy.max_attempts, self._policy.max_age
        return [
            row
            for row in rows
            if (max_attempts is not None and row.attempts >= max_attempts)
            or (max_age is not None and now - row.created_at >= max_age)
        ]

    def _give_up_rule(self) -> str:
        return f"max_attempts={self._policy.max_attempts}, max_age={self._policy.max_age}"
