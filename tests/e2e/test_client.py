"""shipper.client against a real daemon: records land durably; a down or silent daemon fails fast and clearly."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shipper.client import AsyncClient, Client, ShipperRejected, ShipperUnavailable, record
from tests.support import Daemon, FakeRemote, free_port, wait_for, write_config


@pytest.fixture
async def daemon(tmp_path: Path, remote: FakeRemote) -> AsyncIterator[Daemon]:
    sinks = f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\n'
    running = Daemon.from_config(write_config(tmp_path, sinks))
    await running.start()
    yield running
    await running.terminate()


async def test_sync_client_sends_over_unix_and_tcp(daemon: Daemon, remote: FakeRemote) -> None:
    def use() -> None:
        with Client(unix_socket=str(daemon.unix)) as unix, Client(f"http://{daemon.http}") as tcp:
            assert unix.send("remote", {"n": 1}, path="/a").accepted == 1
            ack = tcp.send_many([record("remote", {"n": n}, path="/b", key="k") for n in range(2, 5)])
            assert ack.accepted == 3 and len(ack.ids) == 3

    await asyncio.to_thread(use)
    await wait_for(lambda: len(remote.received) == 4)
    assert sorted(r.json()["n"] for r in remote.received) == [1, 2, 3, 4]


async def test_async_client_sends_and_reports_rejections(daemon: Daemon, remote: FakeRemote) -> None:
    async with AsyncClient(unix_socket=str(daemon.unix)) as client:
        ack = await client.send("remote", {"n": 1})
        assert ack.accepted == 1
        with pytest.raises(ShipperRejected) as caught:
            await client.send("nope", {"n": 2})
        assert caught.value.status == 422 and caught.value.body["field"] == "sink"
    await wait_for(lambda: len(remote.received) == 1)


async def test_clients_say_clearly_when_the_daemon_is_down(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ShipperUnavailable, match="not answering"):
        await asyncio.to_thread(Client(f"http://127.0.0.1:{port}").send, "s", {})
    with pytest.raises(ShipperUnavailable, match="not answering"):
        await asyncio.to_thread(Client(unix_socket=str(tmp_path / "none.sock")).send, "s", {})
    async with AsyncClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(ShipperUnavailable):
            await client.send("s", {})


async def test_clients_never_block_longer_than_their_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ShipperUnavailable):
            await asyncio.to_thread(Client(url, timeout=0.3).send, "s", {})
        async with AsyncClient(url, timeout=0.3) as client:
            with pytest.raises(ShipperUnavailable):
                await client.send("s", {})
        assert time.monotonic() - started < 3.0
