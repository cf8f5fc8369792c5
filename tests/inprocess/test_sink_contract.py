"""One contract, every sink type: what the forwarder may rely on of any `Sink` (sinks/base.py).

- a row the remote takes comes back DELIVERED, and the remote holds it;
- `send` never raises for the remote's or the network's failures: an unreachable remote, a 5xx and a timeout are
  RETRY, a 429's Retry-After is passed on, a 4xx that no retry can fix is REJECT;
- a timeout is marked `unanswered` (the remote may have taken it), a refused connection and any answer are not;
- start and close can be called again without harm (a reload starts sinks before the fleet takes them).

Each case runs on the in-memory queue (which makes the rows, and answers vendor sinks' key lookups) against a real
local aiohttp remote. The file sink has no remote: its failure is a write that fails (`/dev/full`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from shipper.config.sinks import FileSinkConfig, HttpSinkConfig, OtlpSinkConfig, VendorSinkConfig
from shipper.core.retry import Verdict
from shipper.core.rows import SpoolRow
from shipper.otlp.wire import to_json
from shipper.queue.memory import MemoryQueue
from shipper.records import NewRow
from shipper.sinks import Sink, build_sink
from shipper.vendors import VENDORS
from tests.otlp_spans import NEW_GENERATION, export, span
from tests.support import FakeRemote, free_port

KEY = "app-key-contract-1"
HI = {"role": "user", "content": "hi"}


@dataclass(frozen=True)
class Kind:
    """One sink type: its config for a remote at `url`, and a row it delivers."""

    name: str
    settings: Callable[[str], dict[str, Any]]
    row: Callable[[], NewRow]


def vendor_row(vendor: str, method: str, path: str, body: Any) -> Callable[[], NewRow]:
    def make() -> NewRow:
        plan = VENDORS[vendor].plan(method, path, {}, body)
        assert plan is not None and hasattr(plan, "row"), plan
        return plan.row("sink", KEY)  # type: ignore[union-attr]

    return make


def otlp_row() -> NewRow:
    return NewRow("sink", "POST", "/v1/traces", None, to_json(export(span(NEW_GENERATION))), None)


def http_row() -> NewRow:
    return NewRow("sink", "POST", "/in", None, orjson.dumps({"n": 1}), None)


HTTP_KINDS = [
    Kind("http", lambda url: {"type": "http", "base_url": url, "timeout": 1}, http_row),
    Kind("http-batch", lambda url: {"type": "http", "base_url": url, "timeout": 1, "batch": True}, http_row),
    Kind(
        "freeplay",
        lambda url: {"type": "freeplay", "base_url": url, "timeout": 1},
        vendor_row(
            "freeplay",
            "POST",
            "/api/v2/projects/p1/sessions/s1/completions",
            {"messages": [{"role": "user", "content": "hi"}]},
        ),
    ),
    Kind(
        "humanloop",
        lambda url: {"type": "humanloop", "base_url": url, "timeout": 1},
        vendor_row("humanloop", "POST", "/v5/prompts/log", {"path": "contract/prompt", "output": "4"}),
    ),
    Kind(
        "keywordsai",
        lambda url: {"type": "keywordsai", "base_url": url, "timeout": 1},
        vendor_row("keywordsai", "POST", "/api/request-logs/create/", {"model": "m"}),
    ),
    Kind("otlp", lambda url: {"type": "otlp", "base_url": url, "timeout": 1}, otlp_row),
    Kind("otlp-json", lambda url: {"type": "otlp", "base_url": url, "timeout": 1, "encoding": "json"}, otlp_row),
]


def parse(settings: dict[str, Any]) -> HttpSinkConfig | VendorSinkConfig | OtlpSinkConfig:
    if settings["type"] == "http":
        return HttpSinkConfig.model_validate(settings)
    if settings["type"] == "otlp":
        return OtlpSinkConfig.model_validate(settings)
    return VendorSinkConfig.model_validate(settings)


@asynccontextmanager
async def sink_for(kind: Kind, url: str) -> AsyncIterator[tuple[Sink, list[SpoolRow]]]:
    queue = MemoryQueue()
    await queue.append([kind.row()])
    rows = (await queue.lease("sink", 1)).rows
    sink = build_sink("sink", parse(kind.settings(url)), {}, queue)
    await sink.start()
    await sink.start()  # a second start is harmless
    try:
        yield sink, rows
    finally:
        await sink.close()
        await sink.close()


def answering(status: int, headers: dict[str, str] | None = None) -> Callable[[web.Request, bytes], web.Response]:
    return lambda request, body: web.json_response({"error": "scripted"}, status=status, headers=headers)


@pytest.mark.parametrize("kind", HTTP_KINDS, ids=lambda k: k.name)
async def test_a_row_the_remote_takes_is_delivered_and_the_remote_holds_it(kind: Kind, remote: FakeRemote) -> None:
    async with sink_for(kind, remote.url) as (sink, rows):
        outcome = await sink.send(rows)
    assert outcome.verdict is Verdict.DELIVERED, outcome
    assert len(remote.received) == 1


@pytest.mark.parametrize("kind", HTTP_KINDS, ids=lambda k: k.name)
@pytest.mark.parametrize(
    ("status", "headers", "verdict", "retry_after"),
    [
        (503, None, Verdict.RETRY, None),
        (500, None, Verdict.RETRY, None),
        (429, {"Retry-After": "7"}, Verdict.RETRY, 7.0),
        (400, None, Verdict.REJECT, None),
        (422, None, Verdict.REJECT, None),
    ],
)
async def test_each_answer_becomes_its_verdict_never_an_exception(
    kind: Kind,
    remote: FakeRemote,
    status: int,
    headers: dict[str, str] | None,
    verdict: Verdict,
    retry_after: float | None,
) -> None:
    remote.behaviour = answering(status, headers)
    async with sink_for(kind, remote.url) as (sink, rows):
        outcome = await sink.send(rows)
    assert (outcome.verdict, outcome.status, outcome.unanswered) == (verdict, status, False), outcome
    if retry_after is not None:
        assert outcome.retry_after is not None and abs(outcome.retry_after - retry_after) < 1.0
    assert KEY not in outcome.detail


@pytest.mark.parametrize("kind", HTTP_KINDS, ids=lambda k: k.name)
async def test_an_unreachable_remote_is_a_retry_the_remote_never_saw(kind: Kind) -> None:
    async with sink_for(kind, f"http://127.0.0.1:{free_port()}") as (sink, rows):
        outcome = await sink.send(rows)
    assert (outcome.verdict, outcome.status, outcome.unanswered) == (Verdict.RETRY, None, False), outcome


@pytest.mark.parametrize("kind", HTTP_KINDS, ids=lambda k: k.name)
async def test_a_remote_that_never_answers_is_a_retry_it_may_have_taken(kind: Kind, remote: FakeRemote) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request, body: bytes) -> web.StreamResponse | None:
        await release.wait()
        return None

    remote.async_behaviour = hang
    try:
        async with sink_for(kind, remote.url) as (sink, rows):
            outcome = await asyncio.wait_for(sink.send(rows), 10)
    finally:
        release.set()
    assert (outcome.verdict, outcome.status, outcome.unanswered) == (Verdict.RETRY, None, True), outcome


async def test_the_file_sink_delivers_to_its_file_and_a_failed_write_is_a_retry(tmp_path: Path) -> None:
    row = NewRow("sink", "POST", "", None, orjson.dumps({"n": 1}), None)
    queue = MemoryQueue()
    await queue.append([row])
    rows = (await queue.lease("sink", 1)).rows
    for path, verdict in ((tmp_path / "out.ndjson", Verdict.DELIVERED), (Path("/dev/full"), Verdict.RETRY)):
        sink = build_sink("sink", FileSinkConfig(type="file", path=path), {}, queue)
        await sink.start()
        await sink.start()
        try:
            outcome = await sink.send(rows)
        finally:
            await sink.close()
            await sink.close()
        assert outcome.verdict is verdict, (path, outcome)
    assert orjson.loads((tmp_path / "out.ndjson").read_bytes().splitlines()[0])["body"] == {"n": 1}
