"""The per-sink delivery loop: lease rows, send them with bounded concurrency, settle each outcome in the queue.

A row leaves the queue only when its sink says it was delivered (or it is dead-lettered), so a crash at any point
means redelivery, never loss. Rows of one key go one at a time in id order (the lease guarantees it); everything
else flows in parallel. After a failure the whole sink pauses (SinkBackoff) and then probes with a single request,
so an outage costs a handful of requests per backoff step rather than one per row. The loop only applies pure
decisions: when to lease and how much (core/leasing.py: replay or batch mode), what an outcome means
(core/decide.py), how long to pause (core/retry.py), how many requests at once (core/concurrency.py); the clock and
the randomness are injected.
One send and its settlement is delivery.py's; counters and log lines are report.py's.
Not responsible for what a response means (the sink).
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
from shipper.core.decide import Policy
from shipper.core.leasing import Announced, Limits, Mode, batch_hold, free_slots, idle_wait, lease_limit, wakes
from shipper.core.retry import SinkBackoff
from shipper.core.rows import Lease, Retry, SpoolRow
from shipper.errors import SpoolError
from shipper.forward.clock import Clock, SystemClock
from shipper.forward.delivery import Context, Delivery
from shipper.forward.report import Report, SinkCounters
from shipper.queue.base import Leaser
from shipper.sinks.base import Sink
from shipper.tasks import stop

log = logging.getLogger(__name__)


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
        self.backoff = SinkBackoff(policy.retry_initial_backoff, policy.retry_max_backoff, policy.breaker_threshold)
        self.adaptive = AdaptiveLimit(sink.concurrency)
        self._adaptive_on = policy.adaptive_concurrency and sink.concurrency > 1
        self._mode = Mode.of(sink.batching.max_records)
        self._spool = spool
        self._clock: Clock = clock or SystemClock()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._announced = Announced()
        self._backlog = True  # rows may be waiting from before a restart
        self._inflight: dict[asyncio.Task[None], Sequence[SpoolRow]] = {}
        self._answered: set[asyncio.Task[None]] = set()  # of those, the ones sent and answered, settling now
        self._ready: deque[SpoolRow] = deque()  # leased ahead, not sent yet (replay mode)
        self._refill: asyncio.Task[None] | None = None  # a lease for `_ready` under way while sends go on
        rules = Policy(policy.retry_initial_backoff, policy.retry_max_backoff, policy.max_attempts, policy.max_age)
        context = Context(spool, sink, rules, self.backoff, self.adaptive, self.report, self._clock,
                          rng or random.Random(), self._stopped, observe, self._release_ready, log)  # fmt: skip
        self._delivery = Delivery(context, Limits(sink.batching.max_records, sink.batching.max_bytes))

    @property
    def last_error(self) -> str | None:
        return self._delivery.last_error

    @property
    def last_error_at(self) -> float | None:
        return self._delivery.last_error_at

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
        if self._refill is not None:  # it hands its rows back itself, seeing the stop
            await asyncio.gather(self._refill, return_exceptions=True)
        await self._release_ready()
        if not self._inflight:
            return 0
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        abandoned = [row.id for task in pending for row in self._inflight.get(task, ())]
        # each for sure (a cancellation can be lost); what a send ended with is its own business, as before
        await asyncio.gather(*(stop(task) for task in pending), return_exceptions=True)
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
        if wakes(self._mode, before, self._announced, self._delivery.limits.records):
            self._wake.set()

    async def _wait(self, timeout: float | None) -> None:
        self._wake.clear()
        await self._clock.wait(self._wake, timeout)

    def _free_slots(self) -> int:
        return free_slots(self.concurrency_limit, len(self._inflight) - len(self._answered), len(self._inflight))

    async def _step(self) -> None:
        paused = self.backoff.paused_until - self._clock.time()
        free = self._free_slots()
        if paused > 0 or free <= 0:
            await self._wait(paused if paused > 0 else None)
        elif self._mode is Mode.REPLAY and self._ready:
            for _ in range(min(free, len(self._ready))):
                self._spawn([self._ready.popleft()])
            if len(self._ready) < self.concurrency_limit and self._refill is None:
                limit = lease_limit(self._mode, self.concurrency_limit, self._delivery.limits.records)
                self._refill = asyncio.create_task(self._lease_ahead(limit))
        elif self._mode is Mode.REPLAY and self._refill is not None:
            await self._wait(None)  # the refill wakes the loop when its rows are in
        elif self._mode is Mode.REPLAY or await self._batch_due():
            await self._lease(lease_limit(self._mode, self.concurrency_limit, self._delivery.limits.records))

    async def _batch_due(self) -> bool:
        """Whether a batch may be leased now; otherwise hold as batch_hold says, and think again."""
        now, timeout = self._clock.monotonic(), self.sink.batching.timeout
        hold = batch_hold(
            self._announced, self._backlog, self._stopped.is_set(), self._delivery.limits.records, timeout, now
        )
        if hold is None:
            return True
        await self._wait(hold.seconds)
        if hold.quiet:  # a quiet interval: look for retries that came due
            self._backlog = self._announced.count == 0
        return False

    async def _lease(self, limit: int) -> None:
        self._announced = Announced()
        self._wake.clear()
        lease = await self._take(limit)
        if not lease.rows:
            await self._wait(idle_wait(lease.next_due, self._clock.time()))
        elif self._mode is Mode.BATCH:
            self._spawn(lease.rows)
        else:
            self._ready.extend(lease.rows)

    async def _take(self, limit: int) -> Lease:
        lease = await self._spool.lease(self.sink.name, limit, self._delivery.limits.bytes, self.sink.batching.bundles)
        self._backlog = sum(row.records for row in lease.rows) >= limit
        return lease

    async def _lease_ahead(self, limit: int) -> None:
        """Replay mode: lease the next rows while the last round of `_ready` is being sent. A lease waits its turn
        behind ingest's commit; leased only once `_ready` ran dry, every slot idled for that wait (on the vendor
        path ~5 ms in every ~12). Rows that come while the sink fails or stops go back at once, as `_ready` did."""
        try:
            lease = await self._take(limit)
        except SpoolError as exc:
            self.report.spool_trouble("cannot use the spool", exc)  # the loop's own lease meets it again
            return
        finally:
            self._refill = None
            self._wake.set()
        self._ready.extend(lease.rows)
        if self.backoff.failing or self._stopped.is_set():
            await self._release_ready()

    def _spawn(self, rows: Sequence[SpoolRow]) -> None:
        spawned: list[asyncio.Task[None]] = []

        def answered() -> None:
            if spawned and spawned[0] in self._inflight:
                self._answered.add(spawned[0])
                self._wake.set()

        task = asyncio.create_task(self._delivery.deliver(rows, self.backoff.generation, answered))
        spawned.append(task)
        self._inflight[task] = rows
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._answered.discard(task)
        self._backlog = True  # its rows' successors (same key) may be free now, and failed rows may be due
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("sink %s: delivery task failed", self.sink.name, exc_info=task.exception())
