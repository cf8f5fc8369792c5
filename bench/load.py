"""Load generators: closed-loop NDJSON batches, closed-loop single records, and an open-loop fixed rate.

Closed loop (each connection sends its next request when the last is answered) finds the sustained maximum. Open
loop sends on a fixed schedule whatever happens and times each request from when it *should* have been sent, so a
stall shows up in the percentiles instead of silently slowing the generator (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.records import Records
from bench.wire import Client, connect, now

# 202 on the native route; a vendor path answers as the vendor does (Freeplay's creates: 200).
ACKNOWLEDGED = frozenset({200, 201, 202})


@dataclass
class Tally:
    """Acknowledged records and requests whose answer arrived inside the measured window [start, end)."""

    start: float
    end: float
    records: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    def add(self, sent: float, done: float, status: int, body: bytes, records: int) -> None:
        if status not in ACKNOWLEDGED:
            self.errors += 1
            self.first_error = self.first_error or f"HTTP {status}: {body[:200]!r}"
        elif self.start <= done < self.end:
            self.records += records
            self.requests += 1
            self.latencies.append(done - sent)

    def summary(self) -> dict[str, Any]:
        seconds = self.end - self.start
        return {
            "records_per_s": self.records / seconds,
            "requests_per_s": self.requests / seconds,
            "errors": self.errors,
            "first_error": self.first_error,
            **latency_summary(self.latencies),
        }


def latency_summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _connections(target: str, count: int) -> list[Client]:
    return list(await asyncio.gather(*(connect(target) for _ in range(count))))


async def closed_loop(
    target: str, connections: int, build: Callable[[int], bytes], per_request: int, start: float, end: float
) -> dict[str, Any]:
    """Each connection sends `build(seq)` back to back until `end`; rates count answers inside [start, end)."""
    clients = await _connections(target, connections)
    tally = Tally(start, end)
    seqs = itertools.count(0, per_request)

    async def worker(client: Client) -> None:
        while (sent := now()) < tally.end:
            status, body = await client.request(build(next(seqs)))
            tally.add(sent, now(), status, body, per_request)

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        for client in clients:
            client.close()
    return tally.summary()


async def open_loop(
    target: str, build: Callable[[int], bytes], rate: float, start: float, seconds: float, connections: int
) -> dict[str, Any]:
    """Requests `build(seq)` at `rate` per second on a fixed schedule, latency measured from the schedule."""
    clients = await _connections(target, connections)
    idle: asyncio.Queue[Client] = asyncio.Queue()
    for client in clients:
        idle.put_nowait(client)
    tally = Tally(start, float("inf"))
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int, scheduled: float) -> None:
        client = await idle.get()
        status, body = await client.request(build(seq))
        idle.put_nowait(client)
        tally.add(scheduled, now(), status, body, 1)

    total = int(rate * seconds)
    try:
        for seq in range(total):
            scheduled = start + seq / rate
            await asyncio.sleep(max(0.0, scheduled - now()))
            task = asyncio.create_task(one(seq, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for client in clients:
            client.close()
    tally.end = now()
    result = tally.summary()
    result["requests_per_s"] = result["records_per_s"] = tally.requests / seconds
    result["offered_per_s"] = rate
    return result


async def push(target: str, records: Records, total: int, batch: int, connections: int, offset: int = 0) -> float:
    """Send `total` records (from the `offset`-th on) as NDJSON batches as fast as they are acknowledged; returns when
    the last is acked."""
    clients = await _connections(target, connections)
    firsts = iter(range(offset, offset + total, batch))
    errors: list[str] = []

    async def worker(client: Client) -> None:
        for first in firsts:
            status, body = await client.request(records.ndjson_request(first, min(batch, offset + total - first)))
            if status != 202:
                errors.append(f"HTTP {status}: {body[:200]!r}")
                return

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        for client in clients:
            client.close()
    if errors:
        raise RuntimeError(f"ingest refused records: {errors[0]}")
    return now()


async def fixed_count(target: str, build: Callable[[int], bytes], total: int, connections: int) -> dict[str, Any]:
    """`total` requests, one at a time per connection, any 2xx counted as acknowledged (drop-in calls answer 200)."""
    clients = await _connections(target, connections)
    seqs = iter(range(total))
    errors: list[str] = []
    started = now()

    async def worker(client: Client) -> None:
        for seq in seqs:
            status, body = await client.request(build(seq))
            if not 200 <= status <= 299:
                errors.append(f"HTTP {status}: {body[:200]!r}")

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        for client in clients:
            client.close()
    seconds = now() - started
    return {"requests_per_s": total / seconds, "errors": len(errors), "first_error": errors[0] if errors else ""}
