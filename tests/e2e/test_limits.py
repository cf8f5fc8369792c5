"""Hostile input against ingest limits, end to end, with small limits: line length, items per request, JSON depth,
body size on a drop-in path, requests in flight, a body that trickles, headers that trickle, idle keep-alive and
oversized headers. Each answer is the documented status with a JSON error (the HTTP parser's own 400 for headers is
the one plain-text exception); nothing of a refused request is spooled; the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shipper.spool.reader import SpoolReader, read
from tests.hardening import Answer, http_sink, item, numbers, post_records, send
from tests.support import Daemon, FakeRemote, ndjson, unix_session, wait_for, write_config

LIMITS = """
max_body_bytes = 20000
max_line_bytes = 1000
max_items = 5
max_depth = 8
max_concurrent_requests = 4
client_timeout = 1.5
max_header_bytes = 2048
"""


@dataclass
class Running:
    daemon: Daemon
    remote: FakeRemote
    tmp_path: Path
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://{self.daemon.http}/v1/records"

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.daemon.http.rsplit(":", 1)
        return host, int(port)

    def queued(self) -> int:
        return read(self.tmp_path / "spool.db", SpoolReader.waiting)

    async def still_serving(self, n: int = 1) -> None:
        answer = await post_records(self.session, self.url, [item(n)])
        assert answer.status == 202, answer.raw
        await wait_for(lambda: n in numbers(self.remote), timeout=10)


@pytest.fixture
async def running(tmp_path: Path, remote: FakeRemote) -> AsyncIterator[Running]:
    config = write_config(tmp_path, http_sink(remote.url), ingest_extra=LIMITS)
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, remote, tmp_path, session)
    finally:
        assert await daemon.terminate() == 0


def json_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer.raw
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert body["error"] == code, body
    assert body["message"]
    return dict(body)


def nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


# --- lines, items, depth ------------------------------------------------------------------------------------------


async def test_a_line_over_max_line_bytes_is_413_naming_the_line_and_one_at_the_limit_is_taken(
    running: Running,
) -> None:
    short = orjson.dumps(item(1)) + b"\n"
    base = len(orjson.dumps(item(2, pad=1)))
    exact = orjson.dumps(item(2, pad=1 + 1000 - base))
    assert len(exact) == 1000
    over = orjson.dumps(item(3, pad=1 + 1001 - base))
    headers = {"Content-Type": "application/x-ndjson"}

    answer = await send(running.session, "POST", running.url, short + over + b"\n", headers)
    body = json_error(answer, 413, "line_too_long")
    assert (body["line"], body["index"]) == (2, 1)
    assert running.queued() == 0

    answer = await send(running.session, "POST", running.url, short + exact + b"\n", headers)
    assert answer.status == 202, answer.raw
    await running.still_serving(9)


async def test_more_than_max_items_is_413_too_many_items_and_exactly_max_items_is_taken(running: Running) -> None:
    json_error(await post_records(running.session, running.url, [item(n) for n in range(6)]), 413, "too_many_items")
    array = orjson.dumps([item(n) for n in range(6)])
    answer = await send(running.session, "POST", running.url, array, {"Content-Type": "application/json"})
    json_error(answer, 413, "too_many_items")
    assert running.queued() == 0
    assert (await post_records(running.session, running.url, [item(n) for n in range(5)])).status == 202
    await wait_for(lambda: sorted(numbers(running.remote)) == list(range(5)), timeout=10)


@pytest.mark.parametrize("as_json", [False, True], ids=["ndjson", "json"])
async def test_json_nested_past_max_depth_is_400_too_deep_and_at_the_limit_is_taken(
    running: Running, as_json: bool
) -> None:
    # The record object is level 1 and its body level 2: a body of 7 nested lists is 8 levels in all.
    at_limit = {"sink": "remote", "path": "/in", "body": nested(7)}
    too_deep = {"sink": "remote", "path": "/in", "body": nested(8)}
    content_type = "application/json" if as_json else "application/x-ndjson"

    def encode(record: dict[str, Any]) -> bytes:
        return orjson.dumps(record) if as_json else ndjson([record])

    answer = await send(running.session, "POST", running.url, encode(too_deep), {"Content-Type": content_type})
    json_error(answer, 400, "too_deep")
    assert running.queued() == 0
    answer = await send(running.session, "POST", running.url, encode(at_limit), {"Content-Type": content_type})
    assert answer.status == 202, answer.raw


@pytest.mark.parametrize("levels", [300, 5000, 200_000])
async def test_absurdly_deep_json_is_a_4xx_json_error_not_a_crash(running: Running, levels: int) -> None:
    data = b"[" * levels + b"]" * levels
    for content_type in ("application/json", "application/x-ndjson"):
        answer = await send(running.session, "POST", running.url, data[:19_000], {"Content-Type": content_type})
        assert 400 <= answer.status < 500, answer.raw
        assert answer.json()["error"]
    await running.still_serving()


async def test_a_body_over_max_body_bytes_on_a_drop_in_path_is_413(tmp_path: Path, remote: FakeRemote) -> None:
    sinks = f'[sinks.kw]\ntype = "keywordsai"\nbase_url = "{remote.url}"\n'
    config = write_config(tmp_path, sinks, ingest_extra=LIMITS)
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            big = orjson.dumps({"model": "m", "prompt_messages": [], "completion_message": {"pad": "x" * 30_000}})
            answer = await send(
                session,
                "POST",
                f"http://{daemon.http}/api/request-logs/create",
                big,
                {"Content-Type": "application/json", "Authorization": "Bearer k"},
            )
            json_error(answer, 413, "body_too_large")
    finally:
        assert await daemon.terminate() == 0
    assert remote.attempts == 0


# --- connections: concurrency, slow clients, idle keep-alive, headers ---------------------------------------------


async def open_request(host: str, port: int, length: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request whose headers are complete and whose body has not come yet: the server is waiting on it."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST /v1/records HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return status, body


async def test_past_max_concurrent_requests_the_next_request_is_503_too_busy_with_retry_after(
    running: Running,
) -> None:
    body = ndjson([item(100)])
    held = [await open_request(*running.host_port, len(body)) for _ in range(4)]
    try:
        await asyncio.sleep(0.2)  # let the server take all four into their handlers
        answer = await post_records(running.session, running.url, [item(1)])
        json_error(answer, 503, "too_busy")
        assert int(answer.headers["Retry-After"]) >= 1
        for reader, writer in held:
            writer.write(body)
            await writer.drain()
            status, _ = await read_answer(reader, timeout=5)
            assert status == 202
    finally:
        for _, writer in held:
            writer.close()
    await running.still_serving(2)


async def test_a_body_that_trickles_in_gets_408_client_timeout_and_nothing_is_spooled(running: Running) -> None:
    body = ndjson([item(5, pad=200)])
    reader, writer = await open_request(*running.host_port, len(body))

    async def trickle() -> None:
        for byte in body:  # a byte every 0.2 s: the whole body would take a minute
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    started = time.monotonic()
    trickling = asyncio.create_task(trickle())
    try:
        status, raw = await read_answer(reader, timeout=6)
    finally:
        trickling.cancel()
        await asyncio.gather(trickling, return_exceptions=True)
        writer.close()
    assert status == 408, raw
    assert orjson.loads(raw)["error"] == "client_timeout"
    assert time.monotonic() - started < 4
    assert running.queued() == 0
    await running.still_serving()


async def test_headers_that_trickle_in_are_cut_off_within_a_few_client_timeouts(running: Running) -> None:
    """Slowloris: a request line and then a header byte every 0.3 s, forever. The server must not wait forever."""
    reader, writer = await asyncio.open_connection(*running.host_port)
    started = time.monotonic()
    closed_or_answered = False
    try:
        writer.write(b"POST /v1/records HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        while time.monotonic() - started < 10:
            try:
                writer.write(b"X-Slow: a\r\n")
                await writer.drain()
            except (ConnectionError, OSError):
                closed_or_answered = True
                break
            try:
                await asyncio.wait_for(reader.read(1024), 0.3)
            except TimeoutError:
                continue
            closed_or_answered = True  # an answer, or EOF
            break
    finally:
        writer.close()
    held = time.monotonic() - started
    print(f"a client trickling headers was cut off after {held:.1f}s")
    assert closed_or_answered, f"a client trickling headers held its connection open for {held:.1f}s"
    assert held < 3 * 1.5 + 1, held
    await running.still_serving()


async def test_an_idle_keep_alive_connection_is_closed_after_client_timeout(running: Running) -> None:
    reader, writer = await asyncio.open_connection(*running.host_port)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {running.daemon.http}\r\n\r\n".encode())
        await writer.drain()
        status, _ = await read_answer(reader, timeout=5)
        assert status == 200
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # EOF: the server closed it
        assert time.monotonic() - started < 1.5 + 1.5
    finally:
        writer.close()


async def test_a_header_over_max_header_bytes_is_refused_by_the_parser_with_400(running: Running) -> None:
    async with running.session.post(
        running.url,
        data=ndjson([item(1)]),
        headers={"Content-Type": "application/x-ndjson", "X-Big": "x" * 3000},
    ) as response:
        # aiohttp's HTTP parser answers before any handler: a plain-text 400, not shipper's JSON error.
        assert response.status == 400
        await response.read()
    assert running.queued() == 0
    await running.still_serving()


async def test_limits_hold_over_the_unix_socket_too(running: Running) -> None:
    async with unix_session(running.daemon.unix) as session:
        answer = await post_records(session, "http://localhost/v1/records", [item(n) for n in range(6)])
        json_error(answer, 413, "too_many_items")
        over = {"sink": "remote", "path": "/in", "body": nested(8)}
        data = ndjson([over])
        answer = await send(session, "POST", "http://localhost/v1/records", data, {"Content-Type": "application/json"})
        json_error(answer, 400, "too_deep")
    assert running.queued() == 0
