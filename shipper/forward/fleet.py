"""The running sinks: each sink with its forwarder and task; started, replaced on reload, retired, drained.

A sink replaced by a reload keeps serving the drop-in routes until its successor runs, keeps its counters (a
Prometheus counter never goes down within a process), and finishes its in-flight sends before it closes: cancelling
one would mean sending it again. Shutdown drains running and retiring sinks alike, within the drain deadline.
Not responsible for reading configuration (daemon.py) or delivery itself (forwarder.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shipper.config import SinkConfig
from shipper.forward.clock import Clock
from shipper.forward.forwarder import Forwarder
from shipper.forward.report import SinkCounters
from shipper.queue.base import Leaser
from shipper.sinks import Sink, VendorSink
from shipper.sinks.routing import Routing


class SendTimes(Protocol):
    """Where each sink's send latencies go (metrics.py implements it); forgotten when a reload removes the sink."""

    def observer(self, sink: str) -> Callable[[float], None]: ...

    def forget(self, sink: str) -> None: ...


@dataclass(slots=True, eq=False)
class Running:
    config: SinkConfig
    sink: Sink
    forwarder: Forwarder | None  # None where this process only serves the sink's drop-in routes (ingest role)
    task: asyncio.Task[None] | None


class Fleet:
    def __init__(
        self,
        spool: Leaser,
        metrics: SendTimes,
        routing: Routing,
        on_death: Callable[[asyncio.Task[None]], None],
        clock: Clock | None = None,
        deliver: bool = True,
    ) -> None:
        """`deliver=False`: the sinks serve drop-in routes and proxied reads here; another process delivers."""
        self._deliver = deliver
        self.running: dict[str, Running] = {}
        self._retiring: list[Running] = []
        self._counters: dict[str, SinkCounters] = {}
        self._spool = spool
        self._metrics = metrics
        self._routing = routing
        self._on_death = on_death
        self._closed = False
        self._clock = clock

    @property
    def forwarders(self) -> list[Forwarder]:
        return [r.forwarder for r in self.running.values() if r.forwarder is not None]

    @property
    def counters(self) -> dict[str, SinkCounters]:
        return dict(self._counters)

    async def start(self, name: str, config: SinkConfig, sink: Sink) -> None:
        await sink.start()
        if self._closed:  # shutdown began while a reload was building this sink
            await sink.close()
            return
        if not self._deliver:
            self.running[name] = Running(config, sink, None, None)
            self._publish()
            return
        counters = self._counters.setdefault(name, SinkCounters())
        observe = self._metrics.observer(name)
        forwarder = Forwarder(self._spool, sink, config, observe=observe, counters=counters, clock=self._clock)
        task = asyncio.create_task(forwarder.run(), name=f"forward-{name}")
        task.add_done_callback(self._on_death)
        self.running[name] = Running(config, sink, forwarder, task)
        self._publish()

    async def replace(self, name: str, config: SinkConfig, sink: Sink) -> None:
        """Start the new sink first, so its routes never go missing, then retire the old one."""
        old = self.running.get(name)
        await self.start(name, config, sink)
        if old is not None:
            await self._retire(old, None)

    async def remove(self, name: str) -> None:
        old = self.running.pop(name)
        self._publish()
        await self._retire(old, None)
        self._metrics.forget(name)

    async def stop_all(self, deadline: float) -> int:
        """Stop leasing everywhere, then drain; returns how many in-flight rows were handed back unsent."""
        self._closed = True
        everyone = [*self.running.values(), *self._retiring]
        for running in everyone:
            if running.forwarder is not None:
                running.forwarder.stop()
        abandoned = 0
        for running in everyone:
            abandoned += await self._retire(running, max(0.0, deadline - time.monotonic()))
        self.running.clear()
        return abandoned

    async def close_all(self) -> None:
        for running in [*self.running.values(), *self._retiring]:
            await running.sink.close()

    async def _retire(self, running: Running, timeout: float | None) -> int:
        if running not in self._retiring:
            self._retiring.append(running)
        abandoned = 0
        if running.forwarder is not None and running.task is not None:
            running.forwarder.stop()
            await running.task
            abandoned = await running.forwarder.drain(timeout)
        await running.sink.close()
        if running in self._retiring:
            self._retiring.remove(running)
        if running.forwarder is not None:
            running.forwarder.flush_logs()
        return abandoned

    def _publish(self) -> None:
        self._routing.serve({n: r.sink for n, r in self.running.items() if isinstance(r.sink, VendorSink)})
