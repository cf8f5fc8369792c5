"""Latency histograms observed on the event loop's hot path, exported at scrape time.

prometheus_client's Histogram takes a lock and walks its buckets in Python on every observation: two of them per
ingest request cost several microseconds, measurably slowing single-record ingest (make bench (b)). Observed only
from the event loop, a histogram needs no lock, and `bisect` finds the bucket at C speed; the collector turns the
counts into the same exposition (`_bucket`, `_sum`, `_count`) when scraped. Not for counters touched from other
threads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

# Local sends take milliseconds; a remote across the world up to seconds; past 30 s is a timeout anyway.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# An acknowledgement takes about a millisecond (one group commit); a proxied read waits for the vendor.
INGEST_BUCKETS = (0.0005, *LATENCY_BUCKETS)


class LoopHistogram:
    """Counts per bucket (the last one is +Inf) and the sum; `le` bounds are inclusive, as Prometheus wants."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, `+Inf` last: what the exposition format holds."""
        total = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class IngestTimers(Collector):
    """How long ingest takes: every request by route and status, and every acknowledgement (arrival to commit).

    `route` is a bounded set (a route template, `dropin:<vendor>` or `other`), never the raw path, so a client
    cannot mint series by inventing paths.
    """

    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], LoopHistogram] = {}
        self._acks = LoopHistogram(INGEST_BUCKETS)

    @classmethod
    def register(cls, registry: CollectorRegistry) -> IngestTimers:
        timers = cls()
        registry.register(timers)
        return timers

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        histogram = self._requests.get((route, status))
        if histogram is None:
            histogram = self._requests[(route, status)] = LoopHistogram(INGEST_BUCKETS)
        histogram.observe(seconds)

    def observe_ack(self, seconds: float) -> None:
        self._acks.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = HistogramMetricFamily(
            "shipper_ingest_request_duration_seconds",
            "Time from a request's arrival to its answer, by route and status",
            labels=["route", "status"],
        )
        for (route, status), histogram in sorted(self._requests.items()):
            requests.add_metric([route, str(status)], histogram.buckets(), histogram.sum)
        yield requests
        acks = HistogramMetricFamily(
            "shipper_ingest_ack_latency_seconds",
            "Time from a request's arrival until its records are committed to the spool",
        )
        acks.add_metric([], self._acks.buckets(), self._acks.sum)
        yield acks
