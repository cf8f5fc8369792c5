"""Every answer at the ingest edge, one table: what the checks in front of every route (timing, JSON errors,
header check, token, admission) say to each kind of request, over TCP and the Unix socket, served as the daemon
serves them (IngestServer, aiohttp's own parser, no decompression).

Each row pins the status, the error code, the headers that go with it (WWW-Authenticate, Retry-After, Allow), the
refusal counted, and the duration observation (route label and status) that every answer, good or bad, must leave.
The same table held before the five middlewares were folded into one (edge.py) and holds after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from shipper.config.listeners import IngestConfig
from shipper.config.sinks import VendorSinkConfig
from shipper.errors import SpoolFull
from shipper.ingest.activation import Listeners
from shipper.ingest.counters import IngestCounters
from shipper.ingest.routes import build_app
from shipper.ingest.server import IngestServer
from shipper.latency import IngestTimers
from shipper.queue.memory import MemoryQueue
from shipper.records import NewRow
from shipper.sinks.routing import Routing
from shipper.sinks.vendor import VendorSink
from shipper.vendors import VENDORS
from tests.e2e.fuzz_wire import Answer, Endpoint, build_request, exchange, parse_answer

TOKEN = "edge-token-0123456789"
LIMIT = 4096
RECORD = b'{"sink": "remote", "path": "/in", "body": {"n": 1}, "key": "k"}'
FP_LOG = b"/api/v2/projects/p/sessions/s/completions"
FP_BODY = b'{"messages": [{"role": "user", "content": "hi"}], "call_info": {"model": "m", "provider": "p"}}'
JSON = (b"Content-Type", b"application/json")
GOOD = (b"X-Shipper-Token", TOKEN.encode())
BEARER = (b"Authorization", b"Bearer " + TOKEN.encode())


class Queue(MemoryQueue):
    """The in-memory queue, able to fail an append or hold it until released."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: BaseException | None = None
        self.held: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    async def append(self, rows: Sequence[NewRow]) -> list[int]:
        if self.refuse is not None:
            raise self.refuse
        if self.held is not None:
            self.waiting.set()
            await self.held.wait()
        return await super().append(rows)


@dataclass
class Intake:
    spool: Queue = field(default_factory=Queue)
    timers: IngestTimers = field(default_factory=IngestTimers)
    stopping: bool = False


@dataclass
class Edge:
    intake: Intake
    counters: IngestCounters
    tcp: Endpoint
    unix: Endpoint

    async def send(self, endpoint: Endpoint, raw: bytes) -> Answer:
        return await asyncio.to_thread(exchange, endpoint, raw, 10.0)

    def observed(self) -> dict[tuple[str, str], float]:
        """(route, status) → requests observed by the duration histogram."""
        family = next(iter(self.intake.timers.collect()))
        return {
            (sample.labels["route"], sample.labels["status"]): sample.value
            for sample in family.samples
            if sample.name.endswith("_count")
        }


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def operations(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    intake, counters = Intake(), IngestCounters()
    routing = Routing(frozenset({"remote", "freeplay"}))
    # No key of its own: a drop-in call is spooled only with the key the app sent.
    sink = VendorSinkConfig(type="freeplay", base_url="http://127.0.0.1:9/api")
    routing.serve({"freeplay": VendorSink("freeplay", VENDORS["freeplay"], sink, intake.spool, {})})
    config = IngestConfig(
        http="127.0.0.1:0",
        unix=str(tmp_path / "ingest.sock"),
        token=SecretStr(TOKEN),
        max_body_bytes=LIMIT,
        max_concurrent_requests=1,
        client_timeout=1.0,
    )
    app = build_app(intake, routing, counters, config, operations=operations)
    server = IngestServer(app, config, Listeners())
    await server.start()
    try:
        host, port = server.addresses[0].removeprefix("http://").rsplit(":", 1)
        yield Edge(intake, counters, Endpoint("tcp", (host, int(port))), Endpoint("unix", config.unix))
    finally:
        await server.stop()


def post(path: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes = RECORD) -> bytes:
    return build_request(b"POST", path, [JSON, *headers], body)


def chunked(path: bytes, headers: Sequence[tuple[bytes, bytes]], size: int) -> bytes:
    """A body with no declared length (chunked), `size` bytes of JSON: only reading it can find it too large."""
    body = b'"' + b"x" * (size - 2) + b'"'
    head = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json"]
    head += [name + b": " + value for name, value in headers]
    head += [b"Transfer-Encoding: chunked", b"Connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@dataclass(frozen=True)
class Case:
    request: bytes
    status: int
    error: str | None  # the JSON body's `error`; None for an answer that is not a refusal
    route: str  # the duration histogram's route label
    over: str = "tcp"
    headers: dict[str, str] = field(default_factory=dict)  # response headers it must carry
    answer: Any = None  # the whole JSON body, where it is fixed


CASES = {
    "record-with-token-header": Case(post(b"/v1/records", [GOOD]), 202, None, "/v1/records", answer={
        "accepted": 1, "ids": [1]}),
    "record-with-bearer-token": Case(post(b"/v1/records", [BEARER]), 202, None, "/v1/records"),
    "record-over-unix-needs-no-token": Case(post(b"/v1/records", []), 202, None, "/v1/records", over="unix"),
    "record-without-token": Case(post(b"/v1/records", []), 401, "invalid_token", "/v1/records", headers={
        "www-authenticate": 'Bearer realm="shipper"'}),
    "record-with-wrong-token": Case(post(b"/v1/records", [(b"X-Shipper-Token", b"nope")]), 401, "invalid_token",
                                    "/v1/records"),
    "record-with-wrong-bearer": Case(post(b"/v1/records", [(b"Authorization", b"Bearer nope")]), 401,
                                     "invalid_token", "/v1/records"),
    "token-not-utf8": Case(post(b"/v1/records", [(b"X-Shipper-Token", b"tok-\xff")]), 401, "invalid_token",
                           "/v1/records", headers={"www-authenticate": 'Bearer realm="shipper"'}),
    "header-not-utf8": Case(post(b"/v1/records", [GOOD, (b"X-Note", b"caf\xe9")]), 400, "invalid_header",
                            "/v1/records"),
    "header-not-utf8-over-unix": Case(post(b"/v1/records", [(b"X-Note", b"caf\xe9")]), 400, "invalid_header",
                                      "/v1/records", over="unix"),
    "credential-with-control-char": Case(post(b"/v1/records", [GOOD, (b"X-Api-Key", b"ab\tcd")]), 400,
                                         "invalid_header", "/v1/records"),
    "credential-with-nbsp": Case(post(FP_LOG, [GOOD, (b"Authorization", b"Bearer k\xc2\xa0")], FP_BODY), 400,
                                 "invalid_header", "other"),
    "healthz-needs-no-token": Case(build_request(b"GET", b"/healthz", [], None), 200, None, "/healthz",
                                   answer={"status": "ok"}),
    "declared-body-too-large": Case(post(b"/v1/records", [GOOD], b" " * (LIMIT + 1)), 413, "body_too_large",
                                    "/v1/records"),
    "chunked-body-too-large": Case(chunked(b"/v1/records", [GOOD], LIMIT + 10), 413, "body_too_large",
                                   "/v1/records"),
    "invalid-json": Case(post(b"/v1/records", [GOOD], b'{"sink": '), 400, "invalid_json", "/v1/records"),
    "unknown-sink": Case(post(b"/v1/records", [GOOD], b'{"sink": "nope"}'), 422, "unknown_sink", "/v1/records"),
    "wrong-media-type": Case(build_request(b"POST", b"/v1/records", [GOOD, (b"Content-Type", b"text/plain")],
                                           RECORD), 415, "unsupported_media_type", "/v1/records"),
    "unknown-encoding": Case(post(b"/v1/records", [GOOD, (b"Content-Encoding", b"br")]), 415,
                             "unsupported_encoding", "/v1/records"),
    "native-path-wrong-method": Case(build_request(b"GET", b"/v1/records", [GOOD], None), 405,
                                     "method_not_allowed", "other", headers={"allow": "POST"}),
    "no-such-route": Case(post(b"/nowhere", [GOOD], b"{}"), 404, "not_found", "other"),
    "dropin-create": Case(post(FP_LOG, [GOOD, (b"Authorization", b"Bearer app-key")], FP_BODY), 200, None,
                          "dropin:freeplay"),
    # The token proved in Authorization is taken out before the route: it never passes for the vendor's key.
    "bearer-token-is-not-a-vendor-key": Case(post(FP_LOG, [BEARER], FP_BODY), 401, "missing_api_key",
                                             "dropin:freeplay"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_each_request_gets_its_answer_and_is_timed(edge: Edge, case: Case) -> None:
    answer = await edge.send(edge.unix if case.over == "unix" else edge.tcp, case.request)
    assert answer.status == case.status, answer
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    if case.error is not None:
        assert body["error"] == case.error and body["message"]
    if case.answer is not None:
        assert body == case.answer
    for name, value in case.headers.items():
        assert answer.headers[name] == value
    refused = {code: n for code, n in edge.counters.rejected.items() if n}
    assert refused == ({case.error: 1} if case.error else {})  # every refusal is counted by its code
    assert edge.observed() == {(case.route, str(case.status)): 1.0}


async def test_a_refused_request_spools_nothing_and_a_taken_one_is_acknowledged_as_committed(edge: Edge) -> None:
    for case in CASES.values():
        await edge.send(edge.unix if case.over == "unix" else edge.tcp, case.request)
    taken = sum(1 for case in CASES.values() if case.status in (200, 202) and case.route != "/healthz")
    assert len(edge.intake.spool.rows) == taken
    acks = [family for family in edge.intake.timers.collect() if family.name == "shipper_ingest_ack_latency_seconds"]
    assert next(s.value for s in acks[0].samples if s.name.endswith("_count")) == taken


async def test_the_key_sent_with_a_dropin_call_is_stored_and_the_token_is_not(edge: Edge) -> None:
    answer = await edge.send(edge.tcp, post(FP_LOG, [BEARER, (b"X-Shipper-Token", TOKEN.encode())], FP_BODY))
    assert answer.status == 401 and answer.json()["error"] == "missing_api_key"
    answer = await edge.send(edge.tcp, post(FP_LOG, [GOOD, (b"Authorization", b"Bearer app-key")], FP_BODY))
    assert answer.status == 200
    (row,) = edge.intake.spool.rows.values()
    assert row.credential_id is not None and await edge.intake.spool.credential(row.credential_id) == "app-key"


@pytest.mark.parametrize(
    ("failure", "status", "error", "retry_after"),
    [
        pytest.param(SpoolFull("the spool is full"), 503, "spool_full", "1", id="spool-full"),
        pytest.param(RuntimeError("boom"), 500, "internal_error", None, id="unexpected-error"),
    ],
)
async def test_a_failing_append_is_answered_in_json_and_timed(
    edge: Edge,
    caplog: pytest.LogCaptureFixture,
    failure: BaseException,
    status: int,
    error: str,
    retry_after: str | None,
) -> None:
    edge.intake.spool.refuse = failure
    answer = await edge.send(edge.tcp, post(b"/v1/records", [GOOD]))
    assert answer.status == status and answer.json()["error"] == error
    assert answer.headers.get("retry-after") == retry_after
    assert edge.counters.rejected[error] == 1
    assert edge.observed() == {("/v1/records", str(status)): 1.0}
    # Only the unexpected is logged, with its traceback; a spool failure is the answer's to tell.
    logged = [r for r in caplog.records if r.message.startswith("unexpected error while handling POST /v1/records")]
    assert [r.exc_info is not None and r.exc_info[1] is failure for r in logged] == ([True] if status == 500 else [])


async def test_once_shutdown_begins_records_get_503_and_operations_are_still_answered(edge: Edge) -> None:
    edge.intake.stopping = True
    answer = await edge.send(edge.unix, post(b"/v1/records", []))
    assert answer.status == 503 and answer.json()["error"] == "stopping"
    assert answer.headers["retry-after"] == "1"
    assert (await edge.send(edge.tcp, build_request(b"GET", b"/healthz", [], None))).status == 200
    assert edge.intake.spool.rows == {} and edge.counters.rejected["stopping"] == 1
    assert edge.observed() == {("/v1/records", "503"): 1.0, ("/healthz", "200"): 1.0}


async def test_past_the_cap_in_flight_a_request_gets_503_too_busy_and_a_probe_still_passes(edge: Edge) -> None:
    edge.intake.spool.held = asyncio.Event()
    first = asyncio.create_task(edge.send(edge.tcp, post(b"/v1/records", [GOOD])))
    await edge.intake.spool.waiting.wait()  # the first request is in flight, holding the only slot
    answer = await edge.send(edge.unix, post(b"/v1/records", []))
    assert answer.status == 503 and answer.json()["error"] == "too_busy"
    assert answer.headers["retry-after"] == "1"
    assert (await edge.send(edge.tcp, build_request(b"GET", b"/healthz", [], None))).status == 200
    edge.intake.spool.held.set()
    assert (await first).status == 202
    # The slot is free again once the first is answered.
    assert (await edge.send(edge.tcp, post(b"/v1/records", [GOOD]))).status == 202
    assert edge.counters.rejected["too_busy"] == 1
    assert edge.observed() == {("/v1/records", "503"): 1.0, ("/healthz", "200"): 1.0, ("/v1/records", "202"): 2.0}


async def send_in_two(edge: Edge, raw: bytes, cut: int, rest: bool) -> Answer:
    """Send `raw` up to `cut`, then (if `rest`) the remainder a little later: a body that is not all there when the
    route starts to read it."""
    host, port = edge.tcp.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw[:cut])
        await writer.drain()
        if rest:
            await asyncio.sleep(0.05)
            writer.write(raw[cut:])
            await writer.drain()
        return parse_answer(await reader.read())
    finally:
        writer.close()


async def test_a_body_that_arrives_after_its_headers_is_waited_for(edge: Edge) -> None:
    raw = post(b"/v1/records", [GOOD])
    answer = await send_in_two(edge, raw, len(raw) - 10, rest=True)
    assert answer.status == 202 and answer.json() == {"accepted": 1, "ids": [1]}


async def test_a_body_that_stops_arriving_gets_408_client_timeout(edge: Edge) -> None:
    raw = post(b"/v1/records", [GOOD])
    answer = await send_in_two(edge, raw, len(raw) - 10, rest=False)
    assert answer.status == 408 and answer.json()["error"] == "client_timeout"
    assert edge.counters.rejected["client_timeout"] == 1
    assert edge.observed() == {("/v1/records", "408"): 1.0}
    assert edge.intake.spool.rows == {}
