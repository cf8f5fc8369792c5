"""`GET /metrics` of a real daemon subprocess, parsed with prometheus_client's own parser: exact counts of what
was received and refused, what the remote took, retried and refused for good, the latency histogram, the remote
state through an outage, the spool gauges, both listeners, and no API key anywhere in the output."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support import (
    Daemon,
    FakeRemote,
    by_label,
    metric,
    post_items,
    scrape,
    unix_session,
    wait_for,
    wait_for_metrics,
    write_config,
)

pytestmark = pytest.mark.supervised

UNIX = "http://localhost"


def http_sink(name: str, url: str, *, concurrency: int = 16, initial: float = 0.02, cap: float = 0.1) -> str:
    return f"""
[sinks.{name}]
type = "http"
base_url = "{url}"
concurrency = {concurrency}
retry_initial_backoff = {initial}
retry_max_backoff = {cap}
timeout = 10
"""


def item(sink: str, n: int, **body: Any) -> dict[str, Any]:
    return {"sink": sink, "path": "/ingest", "body": {"n": n, **body}}


async def post_raw(session: aiohttp.ClientSession, url: str, data: bytes, content_type: str) -> int:
    async with session.post(url, data=data, headers={"Content-Type": content_type}) as response:
        await response.read()
        return response.status


async def test_metrics_count_records_per_sink_and_refused_requests_per_reason_on_both_listeners(
    tmp_path: Path, remote: FakeRemote
) -> None:
    sinks = http_sink("alpha", remote.url) + http_sink("beta", remote.url)
    config = write_config(tmp_path, sinks, ingest_extra="max_body_bytes = 4096")
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session, unix_session(daemon.unix) as local:
            # 7 records for alpha and 3 for beta, over both transports and all three body forms.
            await post_items(session, f"{tcp}/v1/records", [item("alpha", n) for n in range(5)])
            await post_items(local, f"{UNIX}/v1/records", [item("alpha", 5), item("alpha", 6)], ndjson_body=False)
            await post_items(session, f"{tcp}/v1/records", [item("beta", 7)], ndjson_body=False)
            await post_items(local, f"{UNIX}/v1/records", [item("beta", 8), item("beta", 9)])

            # Refused requests, a known number of each kind; none of them spools anything.
            refused = {
                "invalid_json": [(b'{"sink": "alpha", "body": \n', "application/x-ndjson")] * 2,
                "unsupported_media_type": [(b"sink=alpha", "application/x-www-form-urlencoded")],
                "unknown_sink": [(orjson.dumps(item("gamma", 0)), "application/json")] * 3,
                "invalid_record": [(orjson.dumps({"sink": "alpha", "method": "BREW"}), "application/json")],
                "empty": [(b"\n\n", "application/x-ndjson")],
                "body_too_large": [(orjson.dumps(item("alpha", 0, pad="x" * 8000)), "application/json")],
            }
            expected_status = {
                "invalid_json": 400,
                "unsupported_media_type": 415,
                "unknown_sink": 422,
                "invalid_record": 422,
                "empty": 400,
                "body_too_large": 413,
            }
            for reason, requests in refused.items():
                for index, (data, content_type) in enumerate(requests):
                    target = local if index % 2 else session
                    base = UNIX if index % 2 else tcp
                    assert await post_raw(target, f"{base}/v1/records", data, content_type) == expected_status[reason]
            async with session.get(f"{tcp}/no/such/route") as response:
                assert response.status == 404
            async with session.get(f"{tcp}/v1/records") as response:
                assert response.status == 405

            await wait_for(lambda: len(remote.received) == 10, timeout=20)
            # The remote has answered; the daemon records the outcome a moment later.
            samples = await wait_for_metrics(
                session,
                tcp,
                lambda s: by_label(s, "shipper_records_delivered_total", "sink") == {"alpha": 7, "beta": 3},
            )
            assert by_label(samples, "shipper_records_received_total", "sink") == {"alpha": 7, "beta": 3}
            assert by_label(samples, "shipper_requests_rejected_total", "reason") == {
                "invalid_json": 2,
                "unsupported_media_type": 1,
                "unknown_sink": 3,
                "invalid_record": 1,
                "empty": 1,
                "body_too_large": 1,
                "not_found": 1,
                "method_not_allowed": 1,
            }
            for sink, count in (("alpha", 7), ("beta", 3)):
                assert metric(samples, "shipper_records_delivered_total", sink=sink) == count
                assert metric(samples, "shipper_records_retried_total", sink=sink) == 0
                assert metric(samples, "shipper_records_dead_lettered_total", sink=sink) == 0
                assert metric(samples, "shipper_records_redelivered_total", sink=sink) == 0
                # One send per record (replay mode): the histogram saw each of them.
                assert metric(samples, "shipper_send_duration_seconds_count", sink=sink) == count
                assert metric(samples, "shipper_send_duration_seconds_bucket", sink=sink, le="+Inf") == count
                assert metric(samples, "shipper_sink_state", sink=sink, state="up") == 1
                # The configured 16 (an adaptive limit may have shaved a little off on a slow answer).
                assert 8 < (metric(samples, "shipper_sink_concurrency_limit", sink=sink) or 0) <= 16
                assert metric(samples, "shipper_sink_in_flight", sink=sink) == 0
            assert not by_label(samples, "shipper_records_dropped_total", "sink")

            # The Unix socket serves the same registry: the counters agree.
            _, over_unix = await scrape(local, UNIX)
            for name in ("shipper_records_received_total", "shipper_records_delivered_total"):
                assert by_label(over_unix, name, "sink") == by_label(samples, name, "sink")
            assert by_label(over_unix, "shipper_requests_rejected_total", "reason") == by_label(
                samples, "shipper_requests_rejected_total", "reason"
            )
    finally:
        await daemon.ensure_stopped()


async def test_delivered_retried_redelivered_and_dead_lettered_counts_match_what_the_remote_did(
    tmp_path: Path, remote: FakeRemote
) -> None:
    failed_503: list[int] = []
    refused_400: list[int] = []

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        n = orjson.loads(body)["n"]
        if n == 99:
            refused_400.append(n)
            return web.json_response({"error": "no such thing"}, status=400)
        if len(failed_503) < 4:
            failed_503.append(n)
            return web.json_response({"error": "busy"}, status=503)
        return None

    remote.behaviour = behave
    config = write_config(tmp_path, http_sink("remote", remote.url, concurrency=2))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{tcp}/v1/records", [item("remote", n) for n in range(8)] + [item("remote", 99)])
            await wait_for(lambda: len(remote.received) == 8 and len(refused_400) == 1, timeout=20)
            # The last settle may trail the remote's answer by a moment.
            samples = await wait_for_metrics(
                session,
                tcp,
                lambda s: (
                    metric(s, "shipper_records_delivered_total", sink="remote") == 8
                    and metric(s, "shipper_records_dead_lettered_total", sink="remote") == 1
                ),
                timeout=10,
            )
            assert metric(samples, "shipper_records_received_total", sink="remote") == 9
            assert metric(samples, "shipper_records_delivered_total", sink="remote") == 8
            assert metric(samples, "shipper_records_retried_total", sink="remote") == 4
            assert metric(samples, "shipper_records_dead_lettered_total", sink="remote") == 1
            # A 503 is an answer: the remote said it did not take the row, so its later delivery is no repeat.
            assert metric(samples, "shipper_records_redelivered_total", sink="remote") == 0
            # Every request the remote answered is one observation of the send latency.
            assert remote.attempts == 8 + 4 + 1
            assert metric(samples, "shipper_send_duration_seconds_count", sink="remote") == remote.attempts
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 1
            # The spool gauges (refreshed in the background) come to show the dead letter and an empty queue.
            await wait_for_metrics(
                session,
                tcp,
                lambda s: (
                    metric(s, "shipper_spool_dead_letters", sink="remote") == 1
                    and metric(s, "shipper_spool_queued", sink="remote") == 0
                ),
                timeout=15,
            )
    finally:
        await daemon.ensure_stopped()


async def test_redelivered_counts_only_rows_the_remote_may_have_taken_not_refused_connections_or_answers(
    tmp_path: Path, remote: FakeRemote
) -> None:
    first: set[int] = set()

    async def behave(request: web.Request, body: bytes) -> web.Response | None:
        n = orjson.loads(body)["n"]
        seen, _ = n in first, first.add(n)
        if seen:
            return None
        if n == 5:  # answered: the remote says no
            return web.json_response({"error": "busy"}, status=503)
        if n == 6:  # read, then the connection drops before the answer
            assert request.transport is not None
            request.transport.abort()
        if n == 7:  # read, then no answer before the sink's timeout
            await asyncio.sleep(5)
        return None

    await remote.stop()  # the outage: every connection is refused
    sink = http_sink("remote", remote.url, concurrency=4).replace("timeout = 10", "timeout = 1")
    daemon = Daemon.from_config(write_config(tmp_path, sink))
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{tcp}/v1/records", [item("remote", n) for n in range(8)])
            # Refused over and over: these rows have many attempts, none of which reached the remote.
            await wait_for_metrics(
                session, tcp, lambda s: (metric(s, "shipper_records_retried_total", sink="remote") or 0) >= 8, 20
            )
            remote.async_behaviour = behave
            await remote.start()
            samples = await wait_for_metrics(
                session, tcp, lambda s: metric(s, "shipper_records_delivered_total", sink="remote") == 8, 30
            )
            assert first == set(range(8))
            # Only the reset after sending (6) and the timeout (7) may have reached the remote twice.
            assert metric(samples, "shipper_records_redelivered_total", sink="remote") == 2
    finally:
        await daemon.ensure_stopped()


@pytest.mark.parametrize("stop", ["kill -9", "sigterm past drain_timeout"])
async def test_a_row_in_flight_when_the_daemon_stopped_counts_as_redelivered_after_the_restart(
    tmp_path: Path, remote: FakeRemote, stop: str
) -> None:
    hold = asyncio.Event()

    async def hang(request: web.Request, body: bytes) -> None:
        await hold.wait()

    remote.async_behaviour = hang
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url), drain_timeout=0.5))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [item("remote", 0)])
            await wait_for(lambda: remote.in_flight == 1, timeout=10)
            # The send was cut short (the sender died holding the lease, or the drain gave up on it): the remote may
            # have taken the row.
            if stop == "kill -9":
                await daemon.kill9()
            else:
                assert await daemon.terminate() == 0
                assert "1 in-flight row(s) handed back" in daemon.logs()
            hold.set()
            remote.async_behaviour = None
            await daemon.start()
            tcp = f"http://{daemon.http}"
            samples = await wait_for_metrics(
                session, tcp, lambda s: metric(s, "shipper_records_delivered_total", sink="remote") == 1, 20
            )
            assert metric(samples, "shipper_records_redelivered_total", sink="remote") == 1
    finally:
        await daemon.ensure_stopped()


async def test_state_gauge_goes_backing_off_then_probing_then_up_and_spool_gauges_show_the_queued_rows(
    tmp_path: Path, remote: FakeRemote
) -> None:
    down = True
    answered_503 = 0
    release = asyncio.Event()

    async def behave(request: web.Request, body: bytes) -> web.Response | None:
        nonlocal answered_503
        if down:
            answered_503 += 1
            return web.json_response({"error": "down"}, status=503, headers={"Retry-After": "2"})
        await release.wait()  # the probe after the outage: held until the test has looked
        return None

    remote.async_behaviour = behave
    config = write_config(tmp_path, http_sink("remote", remote.url))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{tcp}/v1/records", [item("remote", n) for n in range(20)])

            # Outage: the sink pauses (Retry-After: 2) with one request at a time allowed.
            samples = await wait_for_metrics(
                session, tcp, lambda s: metric(s, "shipper_sink_state", sink="remote", state="backing_off") == 1
            )
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 0
            assert metric(samples, "shipper_sink_state", sink="remote", state="probing") == 0
            assert metric(samples, "shipper_sink_concurrency_limit", sink="remote") == 1
            assert metric(samples, "shipper_records_delivered_total", sink="remote") == 0

            # The remote comes back but holds the first request: that single request is the probe.
            down = False
            await wait_for(lambda: remote.in_flight == 1, timeout=10)
            samples = await wait_for_metrics(
                session, tcp, lambda s: metric(s, "shipper_sink_state", sink="remote", state="probing") == 1
            )
            assert metric(samples, "shipper_sink_state", sink="remote", state="backing_off") == 0
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 0
            assert metric(samples, "shipper_sink_in_flight", sink="remote") == 1
            assert metric(samples, "shipper_sink_concurrency_limit", sink="remote") == 1

            # Meanwhile the spool gauges catch up within their refresh interval: all 20 rows queued, the oldest aging.
            samples = await wait_for_metrics(
                session,
                tcp,
                lambda s: (
                    metric(s, "shipper_spool_queued", sink="remote") == 20
                    and (metric(s, "shipper_spool_oldest_age_seconds", sink="remote") or 0) > 0
                ),
                timeout=15,
            )
            assert (metric(samples, "shipper_spool_bytes") or 0) > 0
            assert remote.in_flight == 1  # still only the one probe

            release.set()
            await wait_for(lambda: len(remote.received) == 20, timeout=20)
            samples = await wait_for_metrics(
                session, tcp, lambda s: metric(s, "shipper_records_delivered_total", sink="remote") == 20
            )
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 1
            assert metric(samples, "shipper_sink_state", sink="remote", state="backing_off") == 0
            assert metric(samples, "shipper_sink_state", sink="remote", state="probing") == 0
            assert (metric(samples, "shipper_sink_concurrency_limit", sink="remote") or 0) >= 1
            assert metric(samples, "shipper_records_retried_total", sink="remote") == answered_503
            assert metric(samples, "shipper_send_duration_seconds_count", sink="remote") == answered_503 + 20
            await wait_for_metrics(
                session,
                tcp,
                lambda s: (
                    metric(s, "shipper_spool_queued", sink="remote") == 0
                    and metric(s, "shipper_spool_oldest_age_seconds", sink="remote") == 0
                ),
                timeout=15,
            )
    finally:
        release.set()
        await daemon.ensure_stopped()


SINK_KEY = "kw-sink-key-SECRET-0d5c1f"
APP_KEY = "kw-app-key-SECRET-7a2b9e"


async def test_no_api_key_appears_in_metrics_or_the_live_status(tmp_path: Path, remote: FakeRemote) -> None:
    key_file = tmp_path / "kw.key"
    key_file.write_text(SINK_KEY + "\n")
    key_file.chmod(0o600)
    sinks = f"""
[sinks.kw]
type = "keywordsai"
base_url = "{remote.url}"
api_key_file = "{key_file}"
retry_initial_backoff = 0.02
retry_max_backoff = 0.1
"""
    answers = iter([503, 400])

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        status = next(answers, 200)
        return None if status == 200 else web.json_response({"error": "nope"}, status=status)

    remote.behaviour = behave
    daemon = Daemon.from_config(write_config(tmp_path, sinks))
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session, unix_session(daemon.unix) as local:
            path = "/api/request-logs/create/"
            records = [{"sink": "kw", "path": path, "body": {"model": "m", "n": n}} for n in range(4)]
            async with session.post(
                f"{tcp}/v1/records",
                data=orjson.dumps(records[:2]),
                headers={"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"},
            ) as response:
                assert response.status == 202, await response.text()
            async with session.post(f"{tcp}/v1/records", json=records[2:]) as response:
                assert response.status == 202, await response.text()  # no app key: the sink's own goes
            async with local.post(
                f"{UNIX}{path}", json={"model": "m", "n": 9}, headers={"Authorization": f"Bearer {APP_KEY}"}
            ) as response:
                assert response.status == 200, await response.text()
            await wait_for(lambda: len(remote.received) == 4, timeout=20)
            sent_keys = {r.headers["Authorization"] for r in remote.received}
            assert sent_keys == {f"Bearer {APP_KEY}", f"Bearer {SINK_KEY}"}  # both keys really were in play

            await wait_for_metrics(
                session,
                tcp,
                lambda s: (
                    metric(s, "shipper_records_delivered_total", sink="kw") == 4
                    and metric(s, "shipper_records_dead_lettered_total", sink="kw") == 1
                ),
            )
            outputs = [(await scrape(session, tcp))[0], (await scrape(local, UNIX))[0]]
            async with session.get(f"{tcp}/v1/status") as response:
                outputs.append(await response.text())
            for text in outputs:
                for secret in (SINK_KEY, APP_KEY, "SECRET"):
                    assert secret not in text
    finally:
        await daemon.ensure_stopped()
