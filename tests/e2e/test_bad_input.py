"""Bad input against the running daemon: each gets its exact 4xx and JSON error body, nothing from that request is
spooled (no id is even consumed), and the daemon goes on serving the next good request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shipper.spool.reader import SpoolReader, read
from shipper.spool.stats import read_stats
from tests.support import Daemon, FakeRemote, ndjson, unix_session, wait_for, write_config

MAX_BODY = 4096
NDJSON = "application/x-ndjson"
JSON = "application/json"
GOOD = {"sink": "remote", "path": "/in", "body": {"ok": True}}


@dataclass
class Running:
    daemon: Daemon
    remote: FakeRemote
    config: Path
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://{self.daemon.http}/v1/records"


@pytest.fixture
async def running(tmp_path: Path, remote: FakeRemote) -> AsyncIterator[Running]:
    sinks = f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\n'
    config = write_config(tmp_path, sinks, ingest_extra=f"max_body_bytes = {MAX_BODY}")
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, remote, config, session)
    finally:
        assert await daemon.terminate() == 0


async def send(
    session: aiohttp.ClientSession, url: str, data: Any, content_type: str | None, method: str = "POST"
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with session.request(method, url, data=data, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json(), response


def check_body(body: dict[str, Any], expected: dict[str, Any]) -> None:
    """Exactly the expected keys plus a human message."""
    assert {k: v for k, v in body.items() if k != "message"} == expected
    assert isinstance(body["message"], str)
    assert body["message"]


async def nothing_spooled_and_still_serving(run: Running) -> None:
    spool = run.config.parent / "spool.db"
    # No id was ever handed out and no row exists: the bad request left no trace in the spool.
    assert read(spool, SpoolReader.last_id) is None
    assert read(spool, SpoolReader.waiting) == 0
    # What `shipper status` reports (test_cli.py runs the command itself).
    (sink,) = read_stats(spool, ["remote"]).sinks
    assert (sink.queued, sink.dead_lettered) == (0, 0)
    assert run.remote.attempts == 0
    # The daemon still serves, on the same connection pool, and the good record is the very first id.
    async with run.session.post(run.url, data=ndjson([GOOD]), headers={"Content-Type": NDJSON}) as response:
        assert response.status == 202
        assert await response.json() == {"accepted": 1, "ids": [1]}
    await wait_for(lambda: len(run.remote.received) == 1, timeout=10)
    assert run.remote.received[0].json() == {"ok": True}


GOOD_LINE = orjson.dumps(GOOD) + b"\n"
CASES = [
    pytest.param(
        NDJSON,
        GOOD_LINE + b'{"sink": "remote", "body": \n' + GOOD_LINE,
        400,
        {"error": "invalid_json", "index": 1, "line": 2},
        id="malformed-ndjson-line",
    ),
    pytest.param(JSON, b'[{"sink": "remote"}, ', 400, {"error": "invalid_json"}, id="malformed-json"),
    pytest.param(
        NDJSON,
        GOOD_LINE + b'{"sink": "remote", "body": "\xff\xfe"}\n',
        400,
        {"error": "invalid_utf8", "offset": len(GOOD_LINE) + 28},
        id="invalid-utf8",
    ),
    pytest.param("text/plain", GOOD_LINE, 415, {"error": "unsupported_media_type"}, id="wrong-content-type"),
    pytest.param(None, GOOD_LINE, 415, {"error": "unsupported_media_type"}, id="no-content-type"),
    pytest.param(NDJSON, b"\n\n", 400, {"error": "empty"}, id="no-records"),
    pytest.param(JSON, b"", 400, {"error": "empty"}, id="empty-json-body"),
    pytest.param(
        NDJSON,
        GOOD_LINE + ndjson([{"sink": "elsewhere", "body": {}}]),
        422,
        {"error": "unknown_sink", "index": 1, "field": "sink"},
        id="unknown-sink",
    ),
    pytest.param(
        JSON,
        orjson.dumps([GOOD, {"path": "/in", "body": {}}]),
        422,
        {"error": "invalid_record", "index": 1, "field": "sink"},
        id="missing-field",
    ),
    pytest.param(
        NDJSON,
        GOOD_LINE + GOOD_LINE + ndjson([{**GOOD, "key": 42}]),
        422,
        {"error": "invalid_record", "index": 2, "field": "key"},
        id="mistyped-field",
    ),
    pytest.param(
        NDJSON,
        ndjson([{**GOOD, "method": "GET"}]),
        422,
        {"error": "invalid_record", "index": 0, "field": "method"},
        id="unsupported-method-field",
    ),
    pytest.param(
        NDJSON,
        ndjson([GOOD, {**GOOD, "path": "//evil.example/x"}]),
        422,
        {"error": "invalid_record", "index": 1, "field": "path"},
        id="path-leaving-the-sink",
    ),
    pytest.param(
        JSON,
        orjson.dumps([GOOD, 42]),
        422,
        {"error": "invalid_record", "index": 1, "field": "(item)"},
        id="item-not-an-object",
    ),
    pytest.param(
        JSON,
        orjson.dumps({**GOOD, "extra": 1}),
        422,
        {"error": "invalid_record", "index": 0, "field": "extra"},
        id="unknown-field",
    ),
]


@pytest.mark.parametrize(("content_type", "data", "status", "expected"), CASES)
async def test_bad_records_get_an_exact_json_error_spool_nothing_and_the_daemon_keeps_serving(
    running: Running, content_type: str | None, data: bytes, status: int, expected: dict[str, Any]
) -> None:
    got, body, _ = await send(running.session, running.url, data, content_type)
    assert got == status, body
    check_body(body, expected)
    await nothing_spooled_and_still_serving(running)


async def test_a_body_over_max_body_bytes_with_a_declared_length_is_413(running: Running) -> None:
    data = ndjson([{**GOOD, "body": {"pad": "x" * MAX_BODY}}])
    got, body, _ = await send(running.session, running.url, data, NDJSON)
    assert got == 413
    check_body(body, {"error": "body_too_large", "limit": MAX_BODY})
    await nothing_spooled_and_still_serving(running)


async def test_a_chunked_body_over_max_body_bytes_is_413(running: Running) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield ndjson([{**GOOD, "body": {"pad": "x" * 1000}}])

    got, body, _ = await send(running.session, running.url, chunks(), NDJSON)
    assert got == 413
    check_body(body, {"error": "body_too_large", "limit": MAX_BODY})
    await nothing_spooled_and_still_serving(running)


async def test_a_body_of_exactly_max_body_bytes_is_accepted(running: Running) -> None:
    line = ndjson([{**GOOD, "body": {"pad": ""}}])
    data = ndjson([{**GOOD, "body": {"pad": "x" * (MAX_BODY - len(line))}}])
    assert len(data) == MAX_BODY
    async with running.session.post(running.url, data=data, headers={"Content-Type": NDJSON}) as response:
        assert response.status == 202


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("POST", "/v1/nope"), ("POST", "/v1/records/extra")], ids=str
)
async def test_an_unknown_route_is_a_json_404(running: Running, method: str, path: str) -> None:
    got, body, _ = await send(running.session, f"http://{running.daemon.http}{path}", b"{}", JSON, method)
    assert got == 404
    check_body(body, {"error": "not_found"})
    assert path in body["message"]
    await nothing_spooled_and_still_serving(running)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_a_wrong_method_is_a_json_405_that_says_which_method_is_allowed(running: Running, method: str) -> None:
    got, body, response = await send(running.session, running.url, ndjson([GOOD]), NDJSON, method)
    assert got == 405
    check_body(body, {"error": "method_not_allowed"})
    await nothing_spooled_and_still_serving(running)
    # RFC 9110 15.5.6: a 405 MUST carry an Allow header naming the methods the resource supports.
    assert "POST" in response.headers.get("Allow", "")


async def test_bad_input_over_the_unix_socket_gets_the_same_answer(running: Running) -> None:
    async with unix_session(running.daemon.unix) as unix:
        got, body, _ = await send(unix, "http://localhost/v1/records", b"{nope\n", NDJSON)
    assert got == 400
    check_body(body, {"error": "invalid_json", "index": 0, "line": 1})
    await nothing_spooled_and_still_serving(running)


async def test_healthz_answers_json_ok(running: Running) -> None:
    async with running.session.get(f"http://{running.daemon.http}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
