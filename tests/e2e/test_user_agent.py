"""What a remote sees as the caller: `User-Agent: shipper/<version>` on every delivery, and on a proxied call the
app's own agent after it, as a real remote (an aiohttp server on loopback) receives them from a daemon subprocess;
for each vendor's own SDK, the agent it sends without shipper."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import httpx

from shipper import __version__
from tests.fakes import snippets as sdk
from tests.fakes.humanloop import File
from tests.fakes.rig import vendor_rig
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


async def test_each_vendor_sdks_proxied_read_reaches_the_vendor_with_the_agent_it_sends_without_shipper(
    tmp_path: Path,
) -> None:
    from freeplay import Freeplay
    from keywordsai import LogAPI

    async with vendor_rig(tmp_path) as rig:
        rig.kw.logs["kw-1"] = {"id": "kw-1", "unique_id": "kw-1", "model": "gpt-4o-mini", "output": "stored"}
        rig.hl.files[("prompt", "dir/listed")] = File("prompt", "pr_listed", "dir/listed")

        def hl_list(host: str) -> None:
            with sdk.humanloop_client(host) as hl:
                assert [prompt.id for prompt in hl.prompts.list(size=5)] == ["pr_listed"]

        async def read_all(fp: str, hl: str, kw: str) -> None:
            """One read per SDK, against the given hosts."""
            client = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"http://{fp}/api")
            await asyncio.to_thread(client.prompts.get, sdk.FP_PROJECT, "calc", "production")
            await asyncio.to_thread(hl_list, hl)
            try:
                await LogAPI(api_key=sdk.KW_KEY, base_url=f"http://{kw}/api").aget("kw-1")
            except httpx.HTTPStatusError as exc:
                # Keywords AI's SDK drops /api from its base URL; the fake, strict to the documented paths, answers
                # 404 to that (shipper maps it): the attempt it recorded still shows the agent.
                assert exc.response.status_code == 404 and kw != rig.host

        # Without shipper: what each vendor sees from its SDK today.
        await read_all(*(f"127.0.0.1:{fake.port}" for fake in rig.fakes))
        direct = [fake.attempts[-1].headers["User-Agent"] for fake in rig.fakes]
        await read_all(rig.host, rig.host, rig.host)
        through = [fake.attempts[-1].headers["User-Agent"] for fake in rig.fakes]
        assert rig.kw.attempts[-1].status == 200  # through shipper, the read found its log
    assert all(direct), direct
    assert through == [f"shipper/{__version__} (via {agent})" for agent in direct]
