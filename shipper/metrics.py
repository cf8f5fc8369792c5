"""Prometheus metrics and the live view behind `/metrics`, `/v1/status` and systemd's STATUS line.

Counters live where the events happen (plain ints in the forwarder and ingest, no locking, no per-event library
call); a custom collector reads them at scrape time, so there is one source of truth and the hot path stays cheap.
Spool depth, bytes and ages come from a read-only query refreshed in the background (`SpoolMonitor`), never from the
write path. Every drop is counted with a reason. Not responsible for serving HTTP (ingest/routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, Info, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shipper import __version__
from shipper.errors import SpoolError
from shipper.forward.forwarder import Forwarder
from shipper.ingest.counters import IngestCounters
from shipper.latency import LATENCY_BUCKETS, IngestTimers
from shipper.queue.jetstream.queue import StreamQueue
from shipper.sinks.jetstream import JetStreamSink
from shipper.spool.stats import SinkStats, SpoolStats, read_stats

log = logging.getLogger(__name__)

STATES = ("up", "backing_off", "probing", "open", "auth_failed")


class SpoolMonitor:
    """Refreshes spool statistics every `interval` seconds off the event loop, and per-sink delivery rates."""

    def __init__(self, path: Path, sinks: Callable[[], Sequence[Forwarder]], interval: float = 5.0) -> None:
        self.path = path
        self.stats: SpoolStats | None = None
        self._forwarders = sinks
        self._interval = interval
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=int(60 / interval) + 2)

    async def refresh(self) -> SpoolStats | None:
        names = [f.sink.name for f in self._forwarders()]
        try:
            self.stats = await asyncio.to_thread(read_stats, self.path, names)
        except SpoolError as exc:
            log.warning("cannot read spool statistics: %s", exc)
        self._samples.append((time.monotonic(), {f.sink.name: f.counters.delivered for f in self._forwarders()}))
        return self.stats

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)

    def delivered_per_minute(self, sink: str) -> float | None:
        """Records delivered per minute over the last minute (or what history there is)."""
        if len(self._samples) < 2:
            return None
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return (last.get(sink, 0) - first.get(sink, 0)) * 60.0 / (t1 - t0)

    def sink_stats(self, sink: str) -> SinkStats | None:
        if self.stats is None:
            return None
        return next((s for s in self.stats.sinks if s.sink == sink), None)

    def summary(self) -> str:
        """One short line for systemd's STATUS=: queue depth and remote state per sink."""
        parts = []
        now = time.time()
        for f in self._forwarders():
            stats = self.sink_stats(f.sink.name)
            queued = "?" if stats is None else str(stats.queued)
            parts.append(f"{f.sink.name}: {queued} queued, {f.backoff.state(now)}")
        return "; ".join(parts)


class ShipperCollector(Collector):
    def __init__(self, ingest: IngestCounters, forwarders: Callable[[], Sequence[Forwarder]], monitor: SpoolMonitor):
        self._ingest = ingest
        self._forwarders = forwarders
        self._monitor = monitor

    def collect(self) -> Iterable[Metric]:
        yield from self._ingest_metrics()
        yield from self._sink_metrics()
        yield from self._spool_metrics()

    def _ingest_metrics(self) -> Iterator[Metric]:
        received = CounterMetricFamily("shipper_records_received", "Records accepted and committed", labels=["sink"])
        for sink, count in self._ingest.received.items():
            received.add_metric([sink], count)
        rejected = CounterMetricFamily(
            "shipper_requests_rejected", "Ingest requests refused, by reason", labels=["reason"]
        )
        for reason, count in self._ingest.rejected.items():
            rejected.add_metric([reason], count)
        dropped = CounterMetricFamily(
            "shipper_records_dropped", "Records dropped before delivery, by reason", labels=["sink", "reason"]
        )
        for (sink, reason), count in self._ingest.dropped.items():
            dropped.add_metric([sink, reason], count)
        recovered = CounterMetricFamily(
            "shipper_spool_recoveries",
            "Damaged spools moved aside and replaced at start",
            value=self._ingest.spool_recoveries,
        )
        otlp = CounterMetricFamily(
            "shipper_otlp_items",
            "OTLP spans and log records received, by signal and outcome (mapped, passed_over, refused)",
            labels=["signal", "outcome"],
        )
        for (signal, outcome), count in self._ingest.otlp.items():
            otlp.add_metric([signal, outcome], count)
        yield from (received, rejected, dropped, recovered, otlp)

    def _sink_metrics(self) -> Iterator[Metric]:
        families: dict[str, Any] = {
            "delivered": CounterMetricFamily("shipper_records_delivered", "Records the remote took", labels=["sink"]),
            "redelivered": CounterMetricFamily(
                "shipper_records_redelivered", "Delivered records that had been sent before", labels=["sink"]
            ),
            "retried": CounterMetricFamily("shipper_records_retried", "Failed sends to be retried", labels=["sink"]),
            "dead_lettered": CounterMetricFamily(
                "shipper_records_dead_lettered", "Records moved to the dead-letter table", labels=["sink"]
            ),
            "auth_failures": CounterMetricFamily(
                "shipper_sink_auth_failures", "Sends the remote refused for their API key (401, 403)", labels=["sink"]
            ),
        }
        in_flight = GaugeMetricFamily("shipper_sink_in_flight", "Requests in flight", labels=["sink"])
        limit = GaugeMetricFamily("shipper_sink_concurrency_limit", "Current concurrency limit", labels=["sink"])
        state = GaugeMetricFamily(
            "shipper_sink_state", "1 for the sink's current remote state", labels=["sink", "state"]
        )
        now = time.time()
        for f in self._forwarders():
            name = f.sink.name
            for counter, family in families.items():
                family.add_metric([name], getattr(f.counters, counter))
            in_flight.add_metric([name], f.in_flight)
            limit.add_metric([name], f.concurrency_limit)
            current = f.backoff.state(now)
            for candidate in STATES:
                state.add_metric([name, candidate], 1.0 if candidate == current else 0.0)
        yield from families.values()
        yield from (in_flight, limit, state)
        yield from self._stream_metrics()

    def _stream_metrics(self) -> Iterator[Metric]:
        """The `jetstream` sinks' PubAcks: what the stream confirmed, the repeats it dropped, and what is awaited."""
        published = CounterMetricFamily(
            "shipper_jetstream_published", "Rows the stream confirmed with a PubAck", labels=["sink"]
        )
        duplicates = CounterMetricFamily(
            "shipper_jetstream_duplicates",
            "PubAcks that said the stream had the row already (a repeat its dedup window dropped)",
            labels=["sink"],
        )
        pending = GaugeMetricFamily("shipper_jetstream_pubacks_pending", "Publishes awaiting a PubAck", labels=["sink"])
        for f in self._forwarders():
            if isinstance(f.sink, JetStreamSink):
                published.add_metric([f.sink.name], f.sink.published)
                duplicates.add_metric([f.sink.name], f.sink.duplicates)
                pending.add_metric([f.sink.name], f.sink.pending_acks)
        yield from (published, duplicates, pending)

    def _spool_metrics(self) -> Iterator[Metric]:
        stats = self._monitor.stats
        if stats is None:
            return
        yield GaugeMetricFamily("shipper_spool_bytes", "Spool file size including its WAL", value=stats.file_bytes)
        depth = GaugeMetricFamily("shipper_spool_queued", "Rows waiting in the spool", labels=["sink"])
        dead = GaugeMetricFamily("shipper_spool_dead_letters", "Rows in the dead-letter table", labels=["sink"])
        oldest = GaugeMetricFamily("shipper_spool_oldest_age_seconds", "Age of the oldest queued row", labels=["sink"])
        for s in stats.sinks:
            depth.add_metric([s.sink], s.queued)
            dead.add_metric([s.sink], s.dead_lettered)
            oldest.add_metric([s.sink], s.oldest_age or 0.0)
        yield from (depth, dead, oldest)


class Metrics:
    """The registry for one daemon, plus the latency histogram the forwarders feed."""

    def __init__(self, ingest: IngestCounters, forwarders: Callable[[], Sequence[Forwarder]], monitor: SpoolMonitor):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ShipperCollector(ingest, forwarders, monitor))
        self.send_seconds = Histogram(
            "shipper_send_duration_seconds",
            "Time from sending a request to its answer",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ingest = IngestTimers.register(self.registry)
        register_process_metrics(self.registry)

    def forget(self, sink: str) -> None:
        """A sink removed by a reload stops being exported."""
        with contextlib.suppress(KeyError):
            self.send_seconds.remove(sink)

    def observer(self, sink: str) -> Callable[[float], None]:
        child = self.send_seconds.labels(sink)
        return child.observe


def register_process_metrics(registry: CollectorRegistry) -> None:
    """CPU, memory, open files and the Python build, as every exporter has them, and shipper's version as a 1."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    Info("shipper_build", "The running shipper's version", registry=registry).info({"version": __version__})


class RelayCollector(Collector):
    """A relay's share of the stream, read at scrape time: partitions owned, the group's size, messages held, the
    stream's redeliveries, and each owned partition's lag (messages not handed to a relay yet). Not responsible for
    any of it (queue/jetstream/)."""

    def __init__(self, relay: StreamQueue) -> None:
        self._relay = relay

    def collect(self) -> Iterable[Metric]:
        relay = self._relay
        yield GaugeMetricFamily("shipper_relay_partitions_owned", "Partitions this relay holds the lease of",
                                value=len(relay.owned))  # fmt: skip
        yield GaugeMetricFamily("shipper_relay_members", "Relays alive in the group, as last read", value=relay.members)
        yield GaugeMetricFamily("shipper_relay_messages_held", "Messages handed to this relay, not yet acknowledged",
                                value=relay.held)  # fmt: skip
        yield CounterMetricFamily(
            "shipper_relay_redeliveries",
            "Messages the stream handed out again (an earlier delivery was never acknowledged)",
            value=relay.counters.redeliveries,
        )
        lag = GaugeMetricFamily(
            "shipper_relay_consumer_pending", "Messages of a partition not handed to a relay yet", labels=["partition"]
        )
        for partition in relay.owned:
            lag.add_metric([str(partition)], relay.counters.pending.get(partition, 0))
        yield lag


class SpoolLimitsCollector(Collector):
    """The spool's configured bounds and the room left on its filesystem, read at scrape time (one statvfs).

    With them an alert fires while there is still room, before ingest answers 503 `spool_full` or 507. A bound
    that is not set is not exported. Not responsible for enforcing anything (spool/bounds.py).
    """

    def __init__(self, path: Path, max_bytes: int | None, max_rows: int | None) -> None:
        self._directory = path.parent
        self._max_bytes = max_bytes
        self._max_rows = max_rows

    def collect(self) -> Iterable[Metric]:
        if self._max_bytes is not None:
            yield GaugeMetricFamily(
                "shipper_spool_max_bytes", "The spool's bound in bytes ([spool] max_bytes)", value=self._max_bytes
            )
        if self._max_rows is not None:
            yield GaugeMetricFamily(
                "shipper_spool_max_rows", "The spool's bound in rows ([spool] max_rows)", value=self._max_rows
            )
        try:
            usage = shutil.disk_usage(self._directory)
        except OSError:  # the directory vanished: the spool's own errors say so; a scrape must still answer
            return
        yield GaugeMetricFamily(
            "shipper_spool_filesystem_avail_bytes", "Bytes free for shipper on the spool's filesystem", value=usage.free
        )
        yield GaugeMetricFamily(
            "shipper_spool_filesystem_size_bytes", "Size of the spool's filesystem", value=usage.total
        )
