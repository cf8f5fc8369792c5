"""What a remote sees as the caller: `User-Agent: shipper/<version>` on every delivery, and on a proxied call the
app's own agent after it, as a real remote (an aiohttp server on loopback) receives them from a daemon subprocess."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from shipper import __version__
from tests.support import Daemon, FakeRemote, post_items, wait_for, write_config

KEY = {"Authorization": "Bearer kw-test-key-123"}
SDK_AGENT = "keywordsai-python/1.0.4 httpx/0.28.1"


def sinks(url: str) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{url}"

[sinks.kw]
type = "keywordsai"
base_url = "{url}"
"""


async def test_deliveries_say_shipper_and_its_version_and_proxied_calls_keep_the_apps_agent(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sinks(remote.url)))
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        agent = {"User-Agent": SDK_AGENT}
        async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session:
            await post_items(session, f"{tcp}/v1/records", [{"sink": "remote", "path": "/native", "body": {"n": 1}}])
            create = {"model": "gpt-4o-mini", "prompt_messages": []}
            async with session.post(f"{tcp}/api/request-logs/create/", json=create, headers=KEY | agent) as response:
                assert response.status == 200, await response.text()
            await wait_for(lambda: {r.path for r in remote.received} >= {"/native", "/api/request-logs/create/"})
            # Proxied while the app waits: once with the SDK's agent, once with none at all.
            async with session.get(f"{tcp}/api/request-logs/list", headers=KEY | agent) as response:
                assert response.status == 200, await response.text()
            async with session.get(f"{tcp}/api/request-logs/abc", headers=KEY) as response:
                assert response.status == 200, await response.text()
    finally:
        await daemon.ensure_stopped()
    seen = {r.path: r.headers.get("User-Agent") for r in remote.received}
    assert seen == {
        "/native": f"shipper/{__version__}",
        # A spooled call is sent later from its row, which keeps no request headers: shipper's agent alone.
        "/api/request-logs/create/": f"shipper/{__version__}",
        "/api/request-logs/list": f"shipper/{__version__} (via {SDK_AGENT})",
        "/api/request-logs/abc": f"shipper/{__version__}",
    }


async def test_an_http_sinks_own_user_agent_header_wins(tmp_path: Path, remote: FakeRemote) -> None:
    sink = f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\nheaders = {{ "User-Agent" = "acme-relay/2" }}\n'
    daemon = Daemon.from_config(write_config(tmp_path, sink))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
        await wait_for(lambda: len(remote.received) == 1)
    finally:
        await daemon.ensure_stopped()
    assert remote.received[0].headers["User-Agent"] == "acme-relay/2"
