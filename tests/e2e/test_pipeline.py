"""The daemon as a subprocess, records in over both transports, all arriving at a local remote exactly once."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.support import Daemon, FakeRemote, ndjson, unix_session, wait_for, write_config


def http_sink(remote: FakeRemote, batch: bool) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{remote.url}"
batch = {"true" if batch else "false"}
batch_timeout = 0.05
retry_initial_backoff = 0.05
retry_max_backoff = 0.5
"""


async def post(session: aiohttp.ClientSession, url: str, items: list[dict[str, object]]) -> list[int]:
    async with session.post(url, data=ndjson(items), headers={"Content-Type": "application/x-ndjson"}) as response:
        assert response.status == 202, await response.text()
        body = await response.json()
        assert body["accepted"] == len(items)
        return list(body["ids"])


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "replay"])
async def test_ten_thousand_records_over_unix_and_tcp_arrive_exactly_once(
    tmp_path: Path, remote: FakeRemote, batch: bool
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote, batch)))
    await daemon.start()
    try:
        items = [{"sink": "remote", "path": "/ingest", "body": {"n": n, "pad": "x" * 200}} for n in range(10_000)]
        async with unix_session(daemon.unix) as unix, aiohttp.ClientSession() as tcp:
            for start in range(0, 10_000, 500):
                session, url = (
                    (unix, "http://localhost/v1/records") if start % 1000 else (tcp, f"http://{daemon.http}/v1/records")
                )
                await post(session, url, items[start : start + 500])
        await wait_for(lambda: len(remote.bodies()) >= 10_000, timeout=60)
        assert sorted(b["n"] for b in remote.bodies()) == list(range(10_000))
        if not batch:
            assert {r.path for r in remote.received} == {"/ingest"}
    finally:
        assert await daemon.terminate() == 0
