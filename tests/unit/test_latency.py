"""The event-loop histograms export what prometheus_client's own Histogram would for the same observations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from shipper.latency import INGEST_BUCKETS, IngestTimers

seconds = st.floats(min_value=0, max_value=100, allow_nan=False) | st.sampled_from(INGEST_BUCKETS)


@given(st.lists(seconds, max_size=40))
def test_the_ack_histogram_matches_prometheus_clients_for_any_observations(observed: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    timers = IngestTimers.register(ours)
    reference = Histogram(
        "shipper_ingest_ack_latency_seconds",
        "Time from a request's arrival until its records are committed to the spool",
        buckets=INGEST_BUCKETS,
        registry=theirs,
    )
    for value in observed:
        timers.observe_ack(value)
        reference.observe(value)
    expected = generate_latest(theirs).decode()
    exported = generate_latest(ours).decode()
    ack_lines = [line for line in exported.splitlines() if "ack_latency" in line and "_created" not in line]
    assert ack_lines == [line for line in expected.splitlines() if "_created" not in line]


def test_requests_are_exported_by_route_and_status() -> None:
    registry = CollectorRegistry()
    timers = IngestTimers.register(registry)
    timers.observe_request("/v1/records", 202, 0.0004)
    timers.observe_request("/v1/records", 202, 0.003)
    timers.observe_request("dropin:freeplay", 401, 0.002)
    text = generate_latest(registry).decode()
    count = 'shipper_ingest_request_duration_seconds_count{route="/v1/records",status="202"} 2.0'
    assert count in text
    assert 'shipper_ingest_request_duration_seconds_bucket{le="0.0005",route="/v1/records",status="202"} 1.0' in text
    assert 'route="dropin:freeplay",status="401"' in text
