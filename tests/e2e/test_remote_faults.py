"""Remote faults, end to end: the circuit's states, adaptive concurrency, Retry-After as an HTTP date, a per-request
timeout against slow and trickling remotes, 413 on a single oversized record, DNS failure and TLS, each retried
(or dead-lettered only where the remote said no for good) and reported in `/v1/status`, `/metrics` and
`shipper status --json`.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shipper.spool.reader import DeadRow, SpoolReader, read
from tests.hardening import Switch, TlsRemote, http_sink, item, make_certs, numbers, post_records
from tests.support import (
    Daemon,
    FakeRemote,
    metric,
    run_cli_async,
    scrape,
    wait_for,
    write_config,
)


async def live_status(session: aiohttp.ClientSession, daemon: Daemon, sink: str = "remote") -> dict[str, Any]:
    async with session.get(f"http://{daemon.http}/v1/status") as response:
        assert response.status == 200
        body = await response.json()
    return dict(body["sinks"][sink])


async def post(session: aiohttp.ClientSession, daemon: Daemon, items: list[dict[str, Any]]) -> None:
    answer = await post_records(session, f"http://{daemon.http}/v1/records", items)
    assert answer.status == 202, answer.raw


def dead_letters(tmp_path: Path) -> list[DeadRow]:
    return read(tmp_path / "spool.db", SpoolReader.dead_letters)


# --- circuit breaker ----------------------------------------------------------------------------------------------


async def test_the_circuit_backs_off_opens_after_the_threshold_probes_one_at_a_time_and_closes_on_success(
    tmp_path: Path, remote: FakeRemote
) -> None:
    seen_in_flight: list[int] = []

    async def slow_503(request: web.Request, body: bytes) -> web.Response | None:
        seen_in_flight.append(remote.in_flight)
        await asyncio.sleep(0.02)
        if down.on:
            return web.json_response({"error": "down"}, status=503)
        return None

    down = Switch(503)
    remote.async_behaviour = slow_503
    sink = http_sink(remote.url, concurrency=8, initial=0.05, cap=0.3, extra="breaker_threshold = 3")
    daemon = Daemon.from_config(write_config(tmp_path, sink))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 1
            await post(session, daemon, [item(n) for n in range(100)])
            states: set[str] = set()

            async def state_is(wanted: str) -> bool:
                status = await live_status(session, daemon)
                states.add(status["state"])
                return bool(status["state"] == wanted)

            deadline = time.monotonic() + 20
            while not await state_is("open"):
                assert time.monotonic() < deadline, f"never opened; states seen: {states}"
                await asyncio.sleep(0.01)
            assert states & {"backing_off", "probing"}, states
            await daemon.wait_for_log("circuit open", timeout=5)
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_sink_state", sink="remote", state="open") == 1
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 0
            status = await live_status(session, daemon)
            assert status["concurrency_limit"] == 1
            assert "503" in status["last_error"] and status["retrying_since"] is not None

            # While open: one probe at a time, whatever the backlog and the configured concurrency.
            first_open_attempt = len(seen_in_flight)
            await wait_for(lambda: len(seen_in_flight) >= first_open_attempt + 8, timeout=20)
            assert max(seen_in_flight[first_open_attempt:]) == 1, seen_in_flight[first_open_attempt:]
            assert len(remote.received) == 0
            assert sum(line.count("circuit open") for line in daemon.log_lines()) == 1

            down.on = False
            await wait_for(lambda: sorted(numbers(remote)) == list(range(100)), timeout=20)
            status = await live_status(session, daemon)
            assert status["state"] == "up" and status["retrying_since"] is None
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_sink_state", sink="remote", state="up") == 1
            assert metric(samples, "shipper_records_dead_lettered_total", sink="remote") == 0
        await daemon.wait_for_log("remote recovered", timeout=5)
    finally:
        assert await daemon.terminate() == 0


# --- adaptive concurrency -----------------------------------------------------------------------------------------


async def watch_limits(session: aiohttp.ClientSession, daemon: Daemon, until: asyncio.Event) -> list[int]:
    """The concurrency limit while the sink is `up` (a failing sink sends one at a time regardless)."""
    seen = []
    while not until.is_set():
        status = await live_status(session, daemon)
        if status["state"] == "up":
            seen.append(int(status["concurrency_limit"]))
        await asyncio.sleep(0.01)
    return seen


async def test_the_concurrency_limit_shrinks_when_the_remote_pushes_back_with_429_and_grows_back_when_it_stops(
    tmp_path: Path, remote: FakeRemote
) -> None:
    count = 0
    pushing_back = True

    async def busy(request: web.Request, body: bytes) -> web.Response | None:
        nonlocal count
        count += 1
        await asyncio.sleep(0.01)
        if pushing_back and count % 3 == 0:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0"})
        return None

    remote.async_behaviour = busy
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url, concurrency=16, cap=0.05)))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_sink_concurrency_limit", sink="remote") == 16
            for start in range(0, 1500, 500):
                await post(session, daemon, [item(n) for n in range(start, start + 500)])
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_limits(session, daemon, stop))
            await wait_for(lambda: len(set(numbers(remote))) >= 1200, timeout=60)
            stop.set()
            pushed = await watcher
            assert pushed and min(pushed) <= 8, f"limit while pushed back: {sorted(set(pushed))}"

            pushing_back = False
            await wait_for(lambda: len(set(numbers(remote))) == 1500, timeout=30)
            for start in range(1500, 3500, 500):
                await post(session, daemon, [item(n) for n in range(start, start + 500)])
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_limits(session, daemon, stop))
            await wait_for(lambda: len(set(numbers(remote))) == 3500, timeout=60)
            stop.set()
            healthy = await watcher
            assert healthy and max(healthy) == 16, f"limit once healthy: {sorted(set(healthy))}"
    finally:
        assert await daemon.terminate() == 0


async def test_the_concurrency_limit_shrinks_when_answers_slow_down_sharply(tmp_path: Path, remote: FakeRemote) -> None:
    delay = 0.002

    async def slowing(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(delay)

    remote.async_behaviour = slowing
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url, concurrency=16)))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(n) for n in range(300)])
            await wait_for(lambda: len(set(numbers(remote))) == 300, timeout=30)
            assert (await live_status(session, daemon))["concurrency_limit"] == 16
            delay = 0.4  # 200 times slower, and well past the 50 ms noise floor
            await post(session, daemon, [item(n) for n in range(300, 400)])
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_limits(session, daemon, stop))
            await wait_for(lambda: len(set(numbers(remote))) == 400, timeout=60)
            stop.set()
            seen = await watcher
            assert seen and min(seen) < 16, f"limit while the remote slowed down: {sorted(set(seen))}"
    finally:
        assert await daemon.terminate() == 0


# --- Retry-After, timeouts ----------------------------------------------------------------------------------------


async def test_a_retry_after_http_date_delays_the_next_attempt_until_that_date(
    tmp_path: Path, remote: FakeRemote
) -> None:
    def first_503_until_a_date(request: web.Request, body: bytes) -> web.Response | None:
        if remote.attempts == 1:
            when = formatdate(time.time() + 3, usegmt=True)
            return web.json_response({"error": "maintenance"}, status=503, headers={"Retry-After": when})
        return None

    remote.behaviour = first_503_until_a_date
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url, concurrency=1, initial=0.01, cap=0.05)))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(1)])
            await wait_for(lambda: numbers(remote) == [1], timeout=15)
        gap = remote.attempt_times[1] - remote.attempt_times[0]
        # The date has one-second resolution: the wait is between 2 and 3 s, never the 50 ms backoff.
        assert 1.9 <= gap <= 3.6, gap
        assert remote.attempts == 2
    finally:
        assert await daemon.terminate() == 0


async def test_a_remote_answering_after_the_timeout_is_retried_and_the_error_says_why(
    tmp_path: Path, remote: FakeRemote
) -> None:
    async def first_is_late(request: web.Request, body: bytes) -> web.Response | None:
        if remote.attempts == 1:
            await asyncio.sleep(4)
            return web.json_response({"late": True})  # shipper stopped listening long ago: not counted
        return None

    remote.async_behaviour = first_is_late
    config = write_config(tmp_path, http_sink(remote.url, concurrency=1, timeout=1))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(7)])
            await wait_for(lambda: numbers(remote) == [7], timeout=15)
            gap = remote.attempt_times[1] - remote.attempt_times[0]
            assert 0.9 <= gap <= 2.5, f"retried {gap:.2f}s after the first attempt, not after the 1 s timeout"
            assert "no answer within 1s" in (await live_status(session, daemon))["last_error"]
        assert dead_letters(tmp_path) == []
    finally:
        assert await daemon.terminate() == 0


async def test_a_remote_trickling_its_answer_past_the_timeout_is_retried(tmp_path: Path, remote: FakeRemote) -> None:
    async def trickle(request: web.Request, body: bytes) -> web.StreamResponse | None:
        if remote.attempts > 1:
            return None
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = 64
        await response.prepare(request)
        for _ in range(20):  # one byte every 0.25 s: 5 s for a 1 s budget
            await response.write(b" ")
            await asyncio.sleep(0.25)
        return response

    remote.async_behaviour = trickle
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url, concurrency=1, timeout=1)))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(8)])
            await wait_for(lambda: numbers(remote) == [8], timeout=15)
            gap = remote.attempt_times[1] - remote.attempt_times[0]
            assert gap <= 2.5, f"a trickling answer held the send for {gap:.2f}s"
            assert "no answer within 1s" in (await live_status(session, daemon))["last_error"]
    finally:
        assert await daemon.terminate() == 0


# --- 413 ---------------------------------------------------------------------------------------------------------


async def test_a_single_record_too_large_for_the_remote_is_dead_lettered_and_batches_shrink_to_fit(
    tmp_path: Path, remote: FakeRemote
) -> None:
    limit = 20_000
    sizes: list[int] = []

    def too_large(request: web.Request, body: bytes) -> web.Response | None:
        sizes.append(len(body))
        if len(body) > limit:
            return web.json_response({"error": "payload too large"}, status=413)
        return None

    remote.behaviour = too_large
    sink = http_sink(remote.url, extra="batch = true\nbatch_max_records = 100\nbatch_timeout = 0.2")
    daemon = Daemon.from_config(write_config(tmp_path, sink))
    await daemon.start()
    try:
        items = [item(n, pad=500) for n in range(60)]
        items[30] = item(30, pad=30_000)  # alone it is still too large
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, items)
            await wait_for(lambda: len(dead_letters(tmp_path)) == 1, timeout=20)
            await wait_for(lambda: sorted(set(numbers(remote))) == [n for n in range(60) if n != 30], timeout=20)
            (dead,) = dead_letters(tmp_path)
            assert dead.status == 413 and dead.body["n"] == 30, dead.reason
            # Later batches stay under half of the one refused first.
            first_refused = next(size for size in sizes if size > limit)
            await post(session, daemon, [item(n, pad=500) for n in range(100, 160)])
            mark = len(sizes)
            await wait_for(lambda: set(numbers(remote)) >= set(range(100, 160)), timeout=20)
            assert all(size <= first_refused // 2 + 600 for size in sizes[mark:]), (first_refused, sizes[mark:])
    finally:
        assert await daemon.terminate() == 0


# --- DNS and TLS --------------------------------------------------------------------------------------------------


async def test_a_host_that_does_not_resolve_is_retried_with_backoff_and_reported_as_such(tmp_path: Path) -> None:
    sink = http_sink("http://nonexistent.invalid:8080", concurrency=4, initial=0.05, cap=0.5)
    config = write_config(tmp_path, sink)
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(n) for n in range(10)])
            await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.attempts) >= 6, timeout=20)
            status = await live_status(session, daemon)
            assert status["state"] in ("backing_off", "probing", "open")
            assert "cannot resolve host" in status["last_error"], status["last_error"]
            _, samples = await scrape(session, f"http://{daemon.http}")
            assert metric(samples, "shipper_records_dead_lettered_total", sink="remote") == 0
        code, out, err = await run_cli_async("status", "--json", "--config", str(config))
        assert code == 0, err
        assert "cannot resolve host" in out
        attempts = read(tmp_path / "spool.db", SpoolReader.attempts)
        # Backoff, not a hot loop: a few seconds of outage cost tens of attempts, not thousands.
        assert attempts < 200, attempts
        assert dead_letters(tmp_path) == []
    finally:
        assert await daemon.terminate() == 0


@pytest.fixture
async def tls_remote(tmp_path: Path) -> Any:
    server = TlsRemote(certs=make_certs(tmp_path / "certs"))
    await server.start()
    yield server
    await server.stop()


async def test_a_remote_whose_certificate_is_not_trusted_is_retried_with_a_clear_tls_error_and_never_sent_to(
    tmp_path: Path, tls_remote: TlsRemote
) -> None:
    config = write_config(tmp_path, http_sink(tls_remote.url, concurrency=2, initial=0.05, cap=0.5))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(n) for n in range(5)])
            await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.attempts) >= 6, timeout=20)
            status = await live_status(session, daemon)
            assert "TLS" in status["last_error"] and "certificate" in status["last_error"], status["last_error"]
        assert tls_remote.attempts == 0 and tls_remote.received == []
        assert dead_letters(tmp_path) == []
        code, out, _ = await run_cli_async("status", "--json", "--config", str(config))
        assert code == 0 and "TLS" in out
    finally:
        assert await daemon.terminate() == 0


async def test_a_sink_trusting_the_remotes_authority_with_ca_file_delivers_over_tls(
    tmp_path: Path, tls_remote: TlsRemote
) -> None:
    assert tls_remote.certs is not None
    sink = http_sink(tls_remote.url, extra=f'ca_file = "{tls_remote.certs.ca}"')
    daemon = Daemon.from_config(write_config(tmp_path, sink))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(n) for n in range(5)])
        await wait_for(lambda: sorted(numbers(tls_remote)) == list(range(5)), timeout=15)
    finally:
        assert await daemon.terminate() == 0


async def test_a_ca_file_does_not_turn_off_host_name_checks(tmp_path: Path) -> None:
    """A certificate from the trusted authority, but for another name: refused all the same."""
    server = TlsRemote(certs=make_certs(tmp_path / "certs", names="DNS:other.example"))
    await server.start()
    assert server.certs is not None
    sink = http_sink(server.url, initial=0.05, cap=0.5, extra=f'ca_file = "{server.certs.ca}"')
    daemon = Daemon.from_config(write_config(tmp_path, sink))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, daemon, [item(1)])
            await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.attempts) >= 6, timeout=20)
            last_error = (await live_status(session, daemon))["last_error"]
            assert "TLS" in last_error and "127.0.0.1" in last_error, last_error
        assert server.received == []
    finally:
        assert await daemon.terminate() == 0
        await server.stop()
