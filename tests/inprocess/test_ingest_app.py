"""The ingest application in process: served on a real local port by aiohttp's test server, appending to the
in-memory queue. What ingest promises, without a daemon subprocess: a 202 means every row is in the queue; a bad
request is refused with its code and nothing is appended; a header shipper cannot use is refused at the edge; once
shutdown begins, new records get 503 `stopping`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from shipper.config.listeners import IngestConfig
from shipper.ingest.counters import IngestCounters
from shipper.ingest.routes import build_app
from shipper.latency import IngestTimers
from shipper.queue.memory import MemoryQueue
from shipper.sinks.routing import Routing

NDJSON = {"Content-Type": "application/x-ndjson"}


@dataclass
class Intake:
    """What the daemon hands ingest (ingest/keys.py Intake): the queue, the timers, the drain flag."""

    spool: MemoryQueue = field(default_factory=MemoryQueue)
    timers: IngestTimers = field(default_factory=IngestTimers)
    stopping: bool = False


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient, Intake, IngestCounters]]:
    intake, counters = Intake(), IngestCounters()
    app = build_app(intake, Routing(frozenset({"remote"})), counters, IngestConfig(http="127.0.0.1:0", unix=""))
    # Bodies are inflated by ingest itself (encoding.py): the server runs without aiohttp's decompression, as
    # IngestServer sets it.
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(auto_decompress=False)
    async with TestClient(server) as client:
        yield client, intake, counters


def lines(*items: object) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


async def test_a_202_means_every_row_is_in_the_queue_in_order(
    served: tuple[TestClient, Intake, IngestCounters],
) -> None:
    client, intake, counters = served
    body = lines(*({"sink": "remote", "path": "/in", "body": {"n": n}, "key": "k"} for n in range(3)))
    response = await client.post("/v1/records", data=body, headers=NDJSON)
    assert response.status == 202
    answer = await response.json()
    assert answer["accepted"] == 3 and answer["ids"] == list(intake.spool.rows)
    assert [orjson.loads(row.body)["n"] for row in intake.spool.rows.values()] == [0, 1, 2]
    assert counters.received["remote"] == 3


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"sink": "remote", "body": ', NDJSON, 400, "invalid_json"),
        (lines({"sink": "nope", "body": 1}), NDJSON, 422, "unknown_sink"),
        (lines({"sink": "remote", "method": "GET"}), NDJSON, 422, "invalid_record"),
        (b"", {"Content-Type": "application/json"}, 400, "empty"),
        (lines({"sink": "remote"}), {**NDJSON, "Content-Encoding": "br"}, 415, "unsupported_encoding"),
    ],
)
async def test_a_bad_request_is_refused_with_its_code_and_nothing_is_appended(
    served: tuple[TestClient, Intake, IngestCounters], body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    client, intake, counters = served
    response = await client.post("/v1/records", data=body, headers=headers)
    assert response.status == status
    assert (await response.json())["error"] == code
    assert intake.spool.rows == {} and counters.rejected[code] == 1


async def test_once_shutdown_begins_new_records_get_503_stopping(
    served: tuple[TestClient, Intake, IngestCounters],
) -> None:
    client, intake, _ = served
    intake.stopping = True
    response = await client.post("/v1/records", data=lines({"sink": "remote", "body": 1}), headers=NDJSON)
    assert response.status == 503 and (await response.json())["error"] == "stopping"
    assert response.headers["Retry-After"] == "1"
    assert intake.spool.rows == {}
