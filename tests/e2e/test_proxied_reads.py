"""Proxied vendor calls: only the caller's own key, never an answer carrying the sink's key, bounded answers, and
connections of their own so that slow reads never hold up deliveries.

The vendor here is a plain local aiohttp server behind a Keywords AI sink (whose list route is proxied), so each
test can script exactly what the "vendor" answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from shipper.ingest.proxy import PROXY_MAX_BYTES, WHOLE_BYTES
from tests.hardening import Gate, send
from tests.support import Daemon, FakeRemote, wait_for, write_config

SINK_KEY = "kw-sink-key-S3CRET-7777"
APP_KEY = "kw-app-key-1111"
LIST = "/api/request-logs/list?page=1"
CREATE = "/api/request-logs/create/"


def echo_headers(request: web.Request, body: bytes) -> web.Response:
    """A vendor that quotes the request's headers back, as some error pages do."""
    return web.json_response({"headers": dict(request.headers)})


@asynccontextmanager
async def daemon_with(
    tmp_path: Path, remote: FakeRemote, sink_extra: str = "", concurrency: int = 4
) -> AsyncIterator[Daemon]:
    key_file = tmp_path / "kw.key"
    key_file.write_text(SINK_KEY + "\n")
    key_file.chmod(0o600)
    sink = f"""
[sinks.kw]
type = "keywordsai"
base_url = "{remote.url}"
api_key_file = "{key_file}"
concurrency = {concurrency}
adaptive_concurrency = false
timeout = 20
{sink_extra}
"""
    await remote.start()
    daemon = Daemon.from_config(write_config(tmp_path, sink, extra="[enrich]\ntokens = false\ncost = false\n"))
    try:
        await daemon.start()
        yield daemon
    finally:
        await daemon.ensure_stopped()
        await remote.stop()
    assert SINK_KEY not in daemon.logs()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_proxied_call_without_a_key_is_401_and_never_sent_with_the_sinks_key(tmp_path: Path) -> None:
    remote = FakeRemote(behaviour=echo_headers)
    async with daemon_with(tmp_path, remote) as daemon, aiohttp.ClientSession() as session:
        answer = await send(session, "GET", f"http://{daemon.http}{LIST}")
        assert answer.status == 401 and answer.json()["error"] == "missing_api_key", answer
        assert answer.json()["field"] == "Authorization"
        assert remote.attempts == 0
        own = await send(session, "GET", f"http://{daemon.http}{LIST}", headers=bearer(APP_KEY))
        assert own.status == 200
        assert own.json()["headers"]["Authorization"] == f"Bearer {APP_KEY}"


async def test_with_proxy_sink_key_the_sinks_key_stands_in_but_never_comes_back_in_an_answer(tmp_path: Path) -> None:
    remote = FakeRemote(behaviour=echo_headers)
    async with daemon_with(tmp_path, remote, "proxy_sink_key = true") as daemon, aiohttp.ClientSession() as session:
        answer = await send(session, "GET", f"http://{daemon.http}{LIST}")
        assert answer.status == 200, answer
        assert SINK_KEY.encode() not in answer.raw
        assert answer.json()["headers"]["Authorization"] == "Bearer [REDACTED]"


def sized(
    size: int, *, declared: bool, key_at: int | None = None
) -> Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]:
    body = bytearray(b"x" * size)
    if key_at is not None:
        body[key_at : key_at + len(SINK_KEY)] = SINK_KEY.encode()

    async def answer(request: web.Request, _: bytes) -> web.StreamResponse:
        if declared:
            return web.Response(body=bytes(body), content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, size, 100_000):
            await response.write(bytes(body[start : start + 100_000]))
        await response.write_eof()
        return response

    return answer


async def test_an_answer_over_the_limit_with_a_declared_length_is_502_json(tmp_path: Path) -> None:
    remote = FakeRemote(async_behaviour=sized(PROXY_MAX_BYTES + 1, declared=True))
    async with daemon_with(tmp_path, remote) as daemon, aiohttp.ClientSession() as session:
        answer = await send(session, "GET", f"http://{daemon.http}{LIST}", headers=bearer(APP_KEY))
        assert answer.status == 502 and answer.json()["error"] == "upstream_too_large", answer.status


async def test_a_streamed_answer_over_the_limit_is_cut_off_never_a_truncated_200(tmp_path: Path) -> None:
    remote = FakeRemote(async_behaviour=sized(PROXY_MAX_BYTES + 200_000, declared=False))
    async with daemon_with(tmp_path, remote) as daemon, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientPayloadError):
            await send(session, "GET", f"http://{daemon.http}{LIST}", headers=bearer(APP_KEY))
        # The daemon serves on.
        assert (await send(session, "GET", f"http://{daemon.http}/healthz")).status == 200


@pytest.mark.parametrize("declared", [True, False])
async def test_a_large_answer_streams_through_whole_with_the_sinks_key_blanked(tmp_path: Path, declared: bool) -> None:
    size = 3 * 1024 * 1024
    key_at = WHOLE_BYTES + 65_530  # across the first streamed chunk's end
    remote = FakeRemote(async_behaviour=sized(size, declared=declared, key_at=key_at))
    async with daemon_with(tmp_path, remote) as daemon, aiohttp.ClientSession() as session:
        answer = await send(session, "GET", f"http://{daemon.http}{LIST}", headers=bearer(APP_KEY))
        assert answer.status == 200
        expected = b"x" * key_at + b"[REDACTED]" + b"x" * (size - key_at - len(SINK_KEY))
        assert answer.raw == expected


async def test_slow_proxied_reads_do_not_hold_up_deliveries(tmp_path: Path) -> None:
    """Reads that the vendor holds open fill every connection reads may use; deliveries still go out at once."""
    gate = Gate()

    async def hold_reads(request: web.Request, body: bytes) -> web.StreamResponse | None:
        return await gate(request, body) if request.method == "GET" else None

    remote = FakeRemote(async_behaviour=hold_reads)
    extra = "proxy_concurrency = 2"
    async with daemon_with(tmp_path, remote, extra, concurrency=2) as daemon, aiohttp.ClientSession() as session:
        reads = [
            asyncio.create_task(send(session, "GET", f"http://{daemon.http}{LIST}", headers=bearer(APP_KEY)))
            for _ in range(4)
        ]
        try:
            await wait_for(lambda: remote.in_flight == 2, timeout=20)
            created = await send(
                session, "POST", f"http://{daemon.http}{CREATE}", orjson.dumps({"model": "m"}), bearer(APP_KEY)
            )
            assert created.status == 200
            await wait_for(lambda: any(r.method == "POST" for r in remote.received), timeout=20)
            assert not any(task.done() for task in reads)
        finally:
            gate.open()
        assert [(await task).status for task in reads] == [200] * 4
