"""The daemon speaks sd_notify to a real datagram socket passed in NOTIFY_SOCKET, as systemd's Type=notify expects:
READY=1 only once every listener accepts connections, STATUS= with the queue, WATCHDOG=1 pings, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shipper.config.listeners import parse_host_port
from tests.support import Daemon, FakeRemote, write_config

pytestmark = pytest.mark.supervised


class Manager:
    """systemd's end of NOTIFY_SOCKET: every datagram, in order, as it arrives."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.seen: list[str] = []

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = (await loop.sock_recv(self.sock, 4096)).decode()
            self.seen.append(message)
            await self.queue.put(message)

    async def expect(self, prefix: str, timeout: float = 30) -> str:
        async def first() -> str:
            while not (message := await self.queue.get()).startswith(prefix):
                pass
            return message

        return await asyncio.wait_for(first(), timeout)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    m = Manager(tmp_path / "notify.sock")
    pump = asyncio.create_task(m.pump())
    yield m
    pump.cancel()
    await asyncio.wait([pump])
    m.sock.close()


def accepts(family: socket.AddressFamily, address: str | tuple[str, int]) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(address) == 0


async def start(tmp_path: Path, remote: FakeRemote) -> tuple[Path, asyncio.subprocess.Process]:
    config = write_config(tmp_path, f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\n')
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
    }
    with open(tmp_path / "daemon.log", "ab") as log:  # noqa: ASYNC230 - handed to the child
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shipper", "run", "--config", str(config), stdout=log, stderr=log, env=env
        )
    return config, proc


async def test_ready_status_watchdog_and_stopping_reach_the_service_manager(
    tmp_path: Path, remote: FakeRemote, manager: Manager
) -> None:
    config, proc = await start(tmp_path, remote)
    log_path = tmp_path / "daemon.log"
    try:
        await manager.expect("READY=1")
        # At the moment READY=1 arrives, every listener already accepts: systemd may start dependants now.
        addresses = Daemon.from_config(config)
        assert accepts(socket.AF_INET, parse_host_port(addresses.http))
        assert accepts(socket.AF_UNIX, str(addresses.unix))
        assert "queued" in await manager.expect("STATUS=")
        await manager.expect("WATCHDOG=1")
        await manager.expect("WATCHDOG=1")
        proc.terminate()
        await manager.expect("STOPPING=1")
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    ready = next(i for i, m in enumerate(manager.seen) if m.startswith("READY=1"))
    stopping = next(i for i, m in enumerate(manager.seen) if m.startswith("STOPPING=1"))
    assert ready < stopping, manager.seen


async def test_sighup_is_announced_as_reloading_then_ready_again(
    tmp_path: Path, remote: FakeRemote, manager: Manager
) -> None:
    _, proc = await start(tmp_path, remote)
    try:
        await manager.expect("READY=1")
        proc.send_signal(signal.SIGHUP)
        assert "MONOTONIC_USEC=" in await manager.expect("RELOADING=1")
        await manager.expect("READY=1")
        assert proc.returncode is None
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, (tmp_path / "daemon.log").read_text()
