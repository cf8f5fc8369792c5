"""Faults, end to end: the daemon as a subprocess against a scriptable local remote.

kill -9 mid-stream, an outage (503, then connection refused, then recovery), Retry-After, poison records, per-key
order under random failures, and graceful stops. Each test waits for conditions, never for a guessed delay; where
a test does sleep, the sleep *is* the experiment (how long an outage lasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import random
import signal
import stat
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from shipper.core.leasing import SETTLING_ROUNDS
from shipper.spool.reader import SpoolReader, read
from shipper.stopping import closing_time
from tests.support import (
    Daemon,
    FakeRemote,
    ndjson,
    post_items,
    run_cli,
    unix_session,
    wait_for,
    write_config,
)

UNIX_URL = "http://localhost/v1/records"


def sink_toml(
    remote: FakeRemote,
    *,
    concurrency: int = 16,
    initial: float = 0.02,
    cap: float = 0.2,
    batch: bool = False,
    extra: str = "",
) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{remote.url}"
batch = {"true" if batch else "false"}
batch_timeout = 0.05
concurrency = {concurrency}
retry_initial_backoff = {initial}
retry_max_backoff = {cap}
timeout = 10
{extra}
"""


def tcp_url(daemon: Daemon) -> str:
    return f"http://{daemon.http}/v1/records"


def record(n: int, key: str | None = None, **body: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"sink": "remote", "path": "/ingest", "body": {"n": n, **body}}
    if key is not None:
        item["key"] = key
    return item


def arrived(remote: FakeRemote) -> Counter[int]:
    return Counter(body["n"] for body in remote.bodies())


def spool_of(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


def status_json(config: Path) -> dict[str, Any]:
    code, out, err = run_cli("status", "--config", str(config), "--json")
    assert code == 0, err
    return dict(orjson.loads(out))


# --- crash --------------------------------------------------------------------------------------------------------


class Streamer:
    """Clients that keep sending until the daemon dies: NDJSON batches over the Unix socket, single records over
    TCP. Remembers which record numbers were acknowledged (202) and which were sent without an answer."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.numbers = itertools.count()
        self.acked: set[int] = set()
        self.unanswered: set[int] = set()
        self.stop = asyncio.Event()

    async def _send(self, session: aiohttp.ClientSession, url: str, items: list[dict[str, Any]]) -> bool:
        """True when acknowledged; a 503 `stopping` from a draining daemon is a refusal, like a closed port."""
        sent = {item["body"]["n"] for item in items}
        try:
            async with session.post(url, data=ndjson(items), headers={"Content-Type": "application/x-ndjson"}) as r:
                if r.status == 503 and (await r.json())["error"] == "stopping":
                    return False
                assert r.status == 202, await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.unanswered |= sent
            return False
        self.acked |= sent
        return True

    async def unix_batches(self, size: int = 50) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.daemon.unix)), timeout=timeout
        ) as session:
            while not self.stop.is_set():
                items = [record(next(self.numbers), src="unix") for _ in range(size)]
                if not await self._send(session, UNIX_URL, items):
                    return

    async def tcp_singles(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not self.stop.is_set():
                if not await self._send(session, tcp_url(self.daemon), [record(next(self.numbers), src="tcp")]):
                    return

    def start(self) -> list[asyncio.Task[None]]:
        self.stop.clear()
        return [asyncio.create_task(self.unix_batches()), *(asyncio.create_task(self.tcp_singles()) for _ in range(3))]


@pytest.mark.parametrize("batch", [False, True], ids=["replay", "batch"])
async def test_kill_9_while_clients_stream_loses_no_acknowledged_record(
    tmp_path: Path, remote: FakeRemote, batch: bool
) -> None:
    concurrency, batch_max = 16, 100
    config = write_config(
        tmp_path, sink_toml(remote, concurrency=concurrency, batch=batch, extra=f"batch_max_records = {batch_max}")
    )
    daemon = Daemon.from_config(config)
    streamer = Streamer(daemon)
    await daemon.start()
    try:
        for kill in range(2):  # two kills: the bound on repeats below counts both
            clients = streamer.start()
            target = len(streamer.acked) + 1500

            def mid_stream(target: int = target) -> bool:
                return len(streamer.acked) >= target and remote.attempts > 0

            # Kill while records are still pouring in and the forwarder has sends in flight.
            await wait_for(mid_stream, timeout=30)
            await daemon.kill9()
            streamer.stop.set()
            await asyncio.gather(*clients)
            print(f"kill {kill + 1}: {len(streamer.acked)} acknowledged so far, {len(remote.received)} delivered")
            await daemon.start()

        await wait_for(lambda: streamer.acked <= set(arrived(remote)), timeout=60)
        counts = arrived(remote)
        lost = streamer.acked - set(counts)
        duplicates = {n: c for n, c in counts.items() if c > 1}
        unacked_delivered = set(counts) - streamer.acked
        print(
            f"crash: acknowledged={len(streamer.acked)} lost={len(lost)} duplicated={len(duplicates)}"
            f" (extra copies {sum(c - 1 for c in duplicates.values())}: {sorted(duplicates)[:20]})"
            f" unacknowledged-but-delivered={len(unacked_delivered & streamer.unanswered)}"
        )
        assert not lost
        # Redelivery comes only from sends whose answer was not recorded at a kill: those in flight (at most
        # `concurrency`) and those answered, settling (SETTLING_ROUNDS times as many: core/leasing.py), per kill (two).
        bound = 2 * (1 + SETTLING_ROUNDS) * concurrency * (batch_max if batch else 1)
        assert sum(c - 1 for c in duplicates.values()) <= bound
        # Nothing arrives that no client ever sent.
        assert unacked_delivered <= streamer.unanswered
        await wait_for(lambda: status_json(config)["sinks"][0]["queued"] == 0, timeout=10)
    finally:
        assert await daemon.terminate() == 0


# --- outage -------------------------------------------------------------------------------------------------------


def attempts_allowed(outage: float, initial: float, cap: float, concurrency: int) -> int:
    """What the backoff allows during an outage of `outage` seconds.

    The sends in flight when it starts fail together (`concurrency`). Then the sink probes one request at a time,
    pausing uniform[0, min(cap, initial * 2**k)] after the k-th failure: about log2(cap / initial) ramp steps, then
    a mean pause of cap / 2, i.e. ~2 * outage / cap probes. Full jitter has no hard floor, so allow three times the
    mean (exceeding it needs dozens of pauses averaging a third of their mean: far beyond 5 sigma).
    """
    ramp = math.ceil(math.log2(cap / initial)) + 1
    return math.ceil(concurrency + ramp + 3 * (2 * outage / cap))


async def round_trip(url: str, count: int = 30) -> float:
    """Median time for one request that the remote answers at once: what each no-backoff retry would cost."""
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.monotonic()
            async with session.post(url, data=b"{}") as response:
                await response.read()
            times.append(time.monotonic() - started)
    return statistics.median(times)


def spool_attempts(tmp_path: Path) -> int:
    """Each row counts its ended attempts, so while nothing is delivered this is every send the forwarder made, less
    the few whose answer is in but not yet recorded."""
    return read(spool_of(tmp_path), SpoolReader.attempts)


async def test_outage_503_then_refused_then_recovery_delivers_all_within_the_backoff_budget(
    tmp_path: Path, remote: FakeRemote
) -> None:
    initial, cap, concurrency, total = 0.05, 0.4, 16, 200
    phase_503, phase_refused = 1.5, 1.5

    probe = FakeRemote()
    probe.behaviour = lambda request, body: web.json_response({"error": "down"}, status=503)
    await probe.start()
    try:
        rtt = await round_trip(probe.url)
    finally:
        await probe.stop()

    config = write_config(tmp_path, sink_toml(remote, concurrency=concurrency, initial=initial, cap=cap))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        remote.behaviour = lambda request, body: web.json_response({"error": "overloaded"}, status=503)
        async with aiohttp.ClientSession() as session:
            await post_items(session, tcp_url(daemon), [record(n) for n in range(total)])
        await wait_for(lambda: remote.attempts > 0, timeout=10)
        started = remote.attempt_times[0]

        await asyncio.sleep(phase_503)  # the outage's first phase lasts this long
        seen_503 = remote.attempts
        leased_503 = spool_attempts(tmp_path)
        assert len(remote.received) == 0
        # The remote's count and the spool's attempt counter agree, but for a send or two whose outcome is on its way.
        assert abs(leased_503 - seen_503) <= 2, (leased_503, seen_503)

        await remote.stop()  # connections refused from now on
        await asyncio.sleep(phase_refused)
        outage = time.monotonic() - started
        attempts = spool_attempts(tmp_path)

        remote.behaviour = None
        await remote.start()
        back = time.monotonic()
        await wait_for(lambda: len(arrived(remote)) == total, timeout=30)
        recovery = time.monotonic() - back

        allowed = attempts_allowed(outage, initial, cap, concurrency)
        no_backoff = concurrency * outage / rtt
        print(
            f"outage {outage:.2f}s: {seen_503} attempts seen by the remote while it answered 503, {attempts} in all"
            f" (backoff allows {allowed}; a loop without backoff would make ~{no_backoff:.0f}, rtt {rtt * 1000:.1f}ms);"
            f" everything delivered {recovery:.2f}s after recovery"
        )
        assert attempts <= allowed
        assert allowed * 10 < no_backoff  # the budget is a real constraint, not a formality
        # Probing never stopped and the pause is capped: recovery is noticed within about one capped pause.
        assert recovery <= 2 * cap + 2.0
        assert set(arrived(remote)) == set(range(total))
        assert max(arrived(remote).values()) == 1
    finally:
        assert await daemon.terminate() == 0


# --- poison -------------------------------------------------------------------------------------------------------


def reject_poison(request: web.Request, body: bytes) -> web.Response | None:
    if b'"poison":true' in body:
        return web.json_response({"error": "schema violation in record"}, status=400)
    return None


async def test_a_400_dead_letters_only_that_record_and_the_rest_keep_flowing(
    tmp_path: Path, remote: FakeRemote
) -> None:
    config = write_config(tmp_path, sink_toml(remote))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        remote.behaviour = reject_poison
        async with aiohttp.ClientSession() as session:
            ids = await post_items(
                session, tcp_url(daemon), [record(n, poison=True) if n == 0 else record(n) for n in range(30)]
            )
            await wait_for(lambda: len(arrived(remote)) == 29, timeout=10)
            # Later records keep flowing too.
            await post_items(session, tcp_url(daemon), [record(n) for n in range(30, 40)])
        await wait_for(lambda: set(arrived(remote)) == set(range(1, 40)), timeout=10)

        (dead,) = read(spool_of(tmp_path), SpoolReader.dead_letters)
        assert (dead.id, dead.sink, dead.status) == (ids[0], "remote", 400)
        assert dead.response is not None and "schema violation in record" in dead.response
        assert "rejected" in dead.reason
        assert dead.body == {"n": 0, "poison": True}
        assert remote.attempts == 40  # the poison was tried once, not retried

        summary = status_json(config)["sinks"][0]
        assert (summary["queued"], summary["dead_lettered"]) == (0, 1)
    finally:
        assert await daemon.terminate() == 0


async def test_a_dead_lettered_keyed_record_lets_the_next_record_of_its_key_through_in_order(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote)))
    await daemon.start()
    try:
        remote.behaviour = reject_poison
        items = [record(n, key="order-1", poison=n == 2) for n in range(6)]
        async with aiohttp.ClientSession() as session:
            await post_items(session, tcp_url(daemon), items)
            await wait_for(lambda: len(remote.received) == 5, timeout=10)
            await post_items(session, tcp_url(daemon), [record(6, key="order-1")])
        await wait_for(lambda: len(remote.received) == 6, timeout=10)
        assert [b["n"] for b in remote.bodies()] == [0, 1, 3, 4, 5, 6]
        dead = read(spool_of(tmp_path), SpoolReader.dead_letters)
        assert [(d.key, d.status, d.body["n"]) for d in dead] == [("order-1", 400, 2)]
    finally:
        assert await daemon.terminate() == 0


async def test_a_400_with_an_unreadable_retry_after_is_still_dead_lettered(tmp_path: Path, remote: FakeRemote) -> None:
    # A hostile or broken remote's header must not turn a rejection into an endless retry.
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote, initial=0.01, cap=0.05)))
    await daemon.start()
    try:

        def reject(request: web.Request, body: bytes) -> web.Response | None:
            if b'"poison":true' in body:
                return web.json_response({"error": "bad"}, status=400, headers={"Retry-After": "\u00b2"})
            return None

        remote.behaviour = reject
        async with aiohttp.ClientSession() as session:
            await post_items(session, tcp_url(daemon), [record(0, poison=True), record(1)])
        await wait_for(lambda: set(arrived(remote)) == {1}, timeout=10)
        await wait_for(lambda: read(spool_of(tmp_path), SpoolReader.dead_count) == 1, timeout=5)
    finally:
        assert await daemon.terminate() == 0


# --- per-key order ------------------------------------------------------------------------------------------------


async def test_rows_sharing_a_key_arrive_in_acknowledgement_order_despite_concurrency_and_random_503s(
    tmp_path: Path, remote: FakeRemote
) -> None:
    keys, per_key = 8, 25
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote, concurrency=16, initial=0.005, cap=0.03)))
    await daemon.start()
    try:
        rng = random.Random(20240601)
        remote.behaviour = lambda request, body: (
            web.json_response({"error": "flaky"}, status=503) if rng.random() < 0.2 else None
        )
        sequence = itertools.count()
        acked: dict[int, tuple[str | None, int]] = {}  # id -> (key, n)
        async with unix_session(daemon.unix) as unix, aiohttp.ClientSession() as tcp:
            for round_ in range(per_key):
                # Each request mixes every key with unkeyed rows; alternate the transport.
                items = []
                for k in range(keys):
                    items.append(record(next(sequence), key=f"entity-{k}"))
                    items.append(record(next(sequence)))
                session, url = (unix, UNIX_URL) if round_ % 2 else (tcp, tcp_url(daemon))
                ids = await post_items(session, url, items)
                for row_id, item in zip(ids, items, strict=True):
                    acked[row_id] = (item.get("key"), item["body"]["n"])
        await wait_for(lambda: len(remote.received) >= len(acked), timeout=60)

        key_of = {n: key for key, n in acked.values()}
        expected: dict[str, list[int]] = {}
        for row_id in sorted(acked):
            key, n = acked[row_id]
            if key is not None:
                expected.setdefault(key, []).append(n)
        seen: dict[str, list[int]] = {}
        for body in remote.bodies():
            key = key_of[body["n"]]
            if key is not None:
                seen.setdefault(key, []).append(body["n"])
        print(f"per-key order: {remote.attempts - len(remote.received)} of {remote.attempts} attempts got a 503")
        assert remote.attempts > len(remote.received)  # failures really happened
        assert seen == expected
        assert sorted(arrived(remote)) == sorted(n for _, n in acked.values())
    finally:
        assert await daemon.terminate() == 0


# --- graceful stop ------------------------------------------------------------------------------------------------
@pytest.mark.supervised  # how the stop goes depends on the processes
async def test_sigterm_lets_in_flight_sends_finish_then_exits_0_within_drain_timeout(
    tmp_path: Path, remote: FakeRemote
) -> None:
    drain_timeout = 3.0
    config = write_config(tmp_path, sink_toml(remote, concurrency=4), drain_timeout=drain_timeout)
    daemon = Daemon.from_config(config)
    await daemon.start()

    async def slow(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0.5)

    remote.async_behaviour = slow
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, tcp_url(daemon), [record(n) for n in range(40)])
        await wait_for(lambda: remote.in_flight >= 4, timeout=10)
        held = remote.attempts
        started = time.monotonic()
        code = await daemon.terminate(timeout=drain_timeout + 10)
        took = time.monotonic() - started
        print(f"SIGTERM with {held} sends in flight: exit {code} after {took:.2f}s")
        assert code == 0
        assert took < drain_timeout + 1.0
        # The sends in flight were allowed to finish and were recorded as delivered before exit.
        assert len(remote.received) >= held
        assert "shipper stopped" in daemon.logs()
    finally:
        with contextlib.suppress(Exception):
            await daemon.terminate()

    remote.async_behaviour = None
    await daemon.start()
    try:
        await wait_for(lambda: set(arrived(remote)) == set(range(40)), timeout=20)
        assert max(arrived(remote).values()) == 1  # a graceful stop redelivers nothing
    finally:
        assert await daemon.terminate() == 0


@pytest.mark.supervised  # how the stop goes depends on the processes
async def test_sigterm_with_sends_hung_past_drain_timeout_exits_0_on_time_and_hands_them_back(
    tmp_path: Path, remote: FakeRemote
) -> None:
    drain_timeout = 1.0
    config = write_config(tmp_path, sink_toml(remote, concurrency=4), drain_timeout=drain_timeout)
    daemon = Daemon.from_config(config)
    await daemon.start()
    release = asyncio.Event()

    async def hang(request: web.Request, body: bytes) -> web.Response:
        await release.wait()
        return web.json_response({"error": "gave up"}, status=503)  # never a delivery

    remote.async_behaviour = hang
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, tcp_url(daemon), [record(n) for n in range(10)])
        await wait_for(lambda: remote.in_flight == 4, timeout=10)
        started = time.monotonic()
        code = await daemon.terminate(timeout=drain_timeout + 10)
        took = time.monotonic() - started
        print(f"SIGTERM with 4 hung sends: exit {code} after {took:.2f}s (drain_timeout {drain_timeout}s)")
        assert code == 0
        # Sends get the drain budget but for the slice kept to close connections (the stop as a whole fits it).
        assert (drain_timeout - closing_time(drain_timeout)) * 0.9 <= took < drain_timeout + 1.0
        summary = status_json(config)["sinks"][0]
        assert (summary["queued"], summary["leased"]) == (10, 0)  # handed back, not left leased
    finally:
        release.set()
        with contextlib.suppress(Exception):
            await daemon.terminate()

    await wait_for(lambda: remote.in_flight == 0, timeout=5)
    remote.async_behaviour = None
    await daemon.start()
    try:
        await wait_for(lambda: set(arrived(remote)) == set(range(10)), timeout=20)
        assert max(arrived(remote).values()) == 1
    finally:
        assert await daemon.terminate() == 0


@pytest.mark.supervised  # how the stop goes depends on the processes
async def test_sigterm_with_a_client_trickling_its_body_stops_within_drain_timeout_and_cuts_it(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """A request still open at the deadline gets a closed connection (or 503), never a hang, and the stop as a
    whole takes no longer than drain_timeout."""
    drain_timeout = 2.0
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote), drain_timeout=drain_timeout))
    await daemon.start()
    host, port = daemon.http.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = b"POST /v1/records HTTP/1.1\r\nHost: shipper\r\nContent-Type: application/x-ndjson\r\n"
    writer.write(head + b"Content-Length: 100000\r\n\r\n")
    stop = asyncio.Event()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while not stop.is_set():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    try:
        await asyncio.sleep(0.3)  # the handler is reading the body by now
        started = time.monotonic()
        code = await daemon.terminate(timeout=drain_timeout + 10)
        took = time.monotonic() - started
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:  # the cut came while the client was still writing
            answer = b""
        assert code == 0
        # The margin, as in the tests above, is the process's exit after the drain (closing the spool, the
        # interpreter's teardown), which took 0.4s on a loaded 2-core machine running the suite in parallel.
        assert took < drain_timeout + 1.0, f"stop took {took:.2f}s with drain_timeout {drain_timeout}s"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer[:200]
    finally:
        stop.set()
        await trickling
        writer.close()
        await daemon.ensure_stopped()


@pytest.mark.supervised  # how the stop goes depends on the processes
async def test_sigterm_while_clients_stream_exits_0_and_every_acknowledged_record_arrives_once(
    tmp_path: Path, remote: FakeRemote
) -> None:
    drain_timeout = 3.0
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote), drain_timeout=drain_timeout))
    streamer = Streamer(daemon)
    await daemon.start()
    try:
        clients = streamer.start()
        await wait_for(lambda: len(streamer.acked) >= 1500 and remote.attempts > 0, timeout=30)
        started = time.monotonic()
        code = await daemon.terminate(timeout=drain_timeout + 10)
        took = time.monotonic() - started
        streamer.stop.set()
        await asyncio.gather(*clients)
        assert code == 0
        assert took < drain_timeout + 1.0
        await daemon.start()
        await wait_for(lambda: streamer.acked <= set(arrived(remote)), timeout=60)
        counts = arrived(remote)
        duplicates = {n: c for n, c in counts.items() if c > 1}
        print(
            f"SIGTERM mid-stream: exit {code} after {took:.2f}s; acknowledged={len(streamer.acked)}"
            f" duplicated={len(duplicates)} unacknowledged-but-delivered={len(set(counts) - streamer.acked)}"
        )
        assert not streamer.acked - set(counts)
        assert not duplicates  # a graceful stop settles every finished send: nothing is sent twice
    finally:
        assert await daemon.terminate() == 0


@pytest.mark.supervised  # how the stop goes depends on the processes
async def test_sigint_is_as_graceful_as_sigterm(tmp_path: Path, remote: FakeRemote) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote)))
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        await post_items(session, tcp_url(daemon), [record(n) for n in range(5)])
    await wait_for(lambda: len(remote.received) == 5, timeout=10)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(daemon.proc.wait(), 10) == 0
    assert "shipper stopped" in daemon.logs()


@pytest.mark.supervised  # how the stop goes depends on the processes
async def test_the_unix_socket_is_mode_0660_while_running_and_removed_by_a_graceful_stop(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sink_toml(remote)))
    await daemon.start()
    try:
        info = os.stat(daemon.unix)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
    finally:
        assert await daemon.terminate() == 0
    assert not daemon.unix.exists()


# --- giving up ----------------------------------------------------------------------------------------------------


async def test_max_attempts_gives_up_into_the_dead_letter_table_after_exactly_that_many_tries(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon = Daemon.from_config(
        write_config(tmp_path, sink_toml(remote, initial=0.01, cap=0.02, extra="max_attempts = 3"))
    )
    await daemon.start()
    try:
        tries: list[int] = []

        def fail_zero(request: web.Request, body: bytes) -> web.Response | None:
            n = orjson.loads(body)["n"]
            if n == 0:
                tries.append(n)
                return web.json_response({"error": "unavailable"}, status=503)
            return None

        remote.behaviour = fail_zero
        async with aiohttp.ClientSession() as session:
            (row_id, _) = await post_items(session, tcp_url(daemon), [record(0), record(1)])
        await wait_for(lambda: read(spool_of(tmp_path), SpoolReader.dead_count) == 1, timeout=10)
        (dead,) = read(spool_of(tmp_path), SpoolReader.dead_letters)
        assert (dead.id, dead.attempts, dead.status) == (row_id, 3, 503)
        assert "gave up" in dead.reason
        assert len(tries) == 3
        await wait_for(lambda: set(arrived(remote)) == {1}, timeout=10)
    finally:
        assert await daemon.terminate() == 0
