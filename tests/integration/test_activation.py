"""Socket activation end to end: `shipper run` as a subprocess handed listening sockets the way systemd hands them.

The test plays systemd: it creates and binds the listeners, keeps its own copy of them, and starts the daemon with
the sockets at fds 3, 4, … and LISTEN_FDS / LISTEN_FDNAMES / LISTEN_PID set. LISTEN_PID must be the daemon's own
pid, which only exists after the fork, so a tiny wrapper sets it and then exec()s the daemon (exec keeps the pid).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.support import Daemon, FakeRemote, free_port, ndjson, unix_session, wait_for, write_config

# What systemd does between fork and exec: move the listeners to 3, 4, … (via high numbers, so that no target
# clobbers a source that is still to be moved) and name this very process, which exec turns into the daemon.
ACTIVATE = """
import fcntl, os, sys
sources = [int(fd) for fd in os.environ.pop("TEST_LISTEN_SOURCES").split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for fd in sources:
    os.close(fd)
for n, fd in enumerate(high):
    os.dup2(fd, 3 + n)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "shipper", *sys.argv[1:]])
"""


def sink(remote: FakeRemote) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{remote.url}"
retry_initial_backoff = 0.05
retry_max_backoff = 0.5
"""


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    """The service manager's sockets: loopback TCP on a fresh port, and a Unix socket at the very path the config
    names (as the shipped units have it), so that a daemon that unlinked and re-bound it would be caught."""
    tcp = socket.create_server(("127.0.0.1", 0), backlog=64)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "shipper.sock"))
    unix.listen(64)
    yield tcp, unix
    tcp.close()
    unix.close()


async def activate(
    config: Path, sockets: list[socket.socket], names: str | None
) -> tuple[asyncio.subprocess.Process, Path]:
    log_path = config.with_suffix(".log")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TEST_LISTEN_SOURCES": ",".join(str(sock.fileno()) for sock in sockets),
        "LISTEN_FDS": str(len(sockets)),
    }
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    with open(log_path, "ab") as log:  # noqa: ASYNC230 - handed to the child
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ACTIVATE,
            "run",
            "--config",
            str(config),
            pass_fds=[sock.fileno() for sock in sockets],
            stdout=log,
            stderr=log,
            env=env,
        )
    return proc, log_path


async def post(session: aiohttp.ClientSession, url: str, n: int) -> None:
    body = ndjson([{"sink": "remote", "path": "/in", "body": {"n": n}}])
    timeout = aiohttp.ClientTimeout(total=30)
    async with session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=timeout) as r:
        assert r.status == 202, await r.text()


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.parametrize(
    ("order", "names"),
    [
        (("tcp", "unix"), "http:unix"),
        (("unix", "tcp"), "unix:http"),
        (("unix", "tcp"), None),  # no LISTEN_FDNAMES at all: by family
        (("unix", "tcp"), "shipper.socket:shipper.socket"),  # systemd's default name for one socket unit: by family
    ],
    ids=["named", "named-reversed", "unnamed", "unit-named"],
)
async def test_inherited_sockets_are_served_instead_of_the_configured_addresses(
    tmp_path: Path,
    remote: FakeRemote,
    listeners: tuple[socket.socket, socket.socket],
    order: tuple[str, str],
    names: str | None,
) -> None:
    tcp, unix = listeners
    by_kind = {"tcp": tcp, "unix": unix}
    inode = (tmp_path / "shipper.sock").stat().st_ino
    config_port = free_port()
    config = write_config(tmp_path, sink(remote), http_port=config_port)
    proc, log_path = await activate(config, [by_kind[kind] for kind in order], names)
    try:
        port = tcp.getsockname()[1]
        async with aiohttp.ClientSession() as http, unix_session(tmp_path / "shipper.sock") as local:
            # Sent at once, before the daemon is up: the connection waits in the backlog, it is not refused.
            await post(http, f"http://127.0.0.1:{port}/v1/records", 1)
            await post(local, "http://localhost/v1/records", 2)
        await wait_for(lambda: sorted(b["n"] for b in remote.bodies()) == [1, 2], timeout=30)
        assert refuses(config_port), "bound [ingest] http although a TCP listener was inherited"
        assert (tmp_path / "shipper.sock").stat().st_ino == inode, "re-bound [ingest] unix over the inherited socket"
        assert "socket-activated: 2 inherited listener(s)" in log_path.read_text()
    finally:
        assert await stop(proc) == 0, log_path.read_text()
    assert (tmp_path / "shipper.sock").stat().st_ino == inode, "removed a socket file the service manager owns"


async def test_a_role_that_is_not_inherited_is_bound_from_the_config(
    tmp_path: Path, remote: FakeRemote, listeners: tuple[socket.socket, socket.socket]
) -> None:
    _, unix = listeners
    config = write_config(tmp_path, sink(remote))
    daemon = Daemon.from_config(config)
    proc, log_path = await activate(config, [unix], "unix")
    try:
        async with aiohttp.ClientSession() as http, unix_session(daemon.unix) as local:
            await post(local, "http://localhost/v1/records", 1)
            await wait_for(lambda: not refuses(int(daemon.http.rsplit(":", 1)[1])), timeout=30)
            await post(http, f"http://{daemon.http}/v1/records", 2)
        await wait_for(lambda: sorted(b["n"] for b in remote.bodies()) == [1, 2], timeout=30)
    finally:
        assert await stop(proc) == 0, log_path.read_text()
    assert daemon.unix.exists(), "removed a socket file the service manager owns"


async def test_a_socket_whose_name_contradicts_its_family_stops_the_daemon_with_a_reason(
    tmp_path: Path, remote: FakeRemote, listeners: tuple[socket.socket, socket.socket]
) -> None:
    tcp, _ = listeners
    config = write_config(tmp_path, sink(remote))
    proc, log_path = await activate(config, [tcp], "unix")
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert "inherited fd 3 (unix) has family AF_INET, which cannot serve unix" in log_path.read_text()


async def test_listen_fds_meant_for_another_process_are_ignored(
    tmp_path: Path, remote: FakeRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LISTEN_PID that is not ours (say, inherited from a parent that was activated) must not make us grab fds."""
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "2")
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote)))
    await daemon.start()  # healthy on its configured TCP port
    try:
        assert daemon.unix.exists()
    finally:
        assert await daemon.terminate() == 0
    assert not daemon.unix.exists(), "its own socket file is removed at exit"


@pytest.mark.parametrize("workers", ["0", "1"], ids=["alone", "supervised"])
async def test_a_socket_named_otlp_is_served_by_the_otlp_receiver_instead_of_its_configured_address(
    tmp_path: Path, remote: FakeRemote, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    for role in ("INGEST", "DELIVERY"):
        monkeypatch.setenv(f"SHIPPER__DAEMON__{role}_WORKERS", workers)
    otlp = socket.create_server(("127.0.0.1", 0), backlog=64)
    configured = free_port()
    extra = f'[otlp]\nhttp = "127.0.0.1:{configured}"\nroute = ["col"]\n'
    collector = f'[sinks.col]\ntype = "otlp"\nbase_url = "{remote.url}"\nretry_initial_backoff = 0.05\n'
    config = write_config(tmp_path, sink(remote) + collector, extra=extra)
    proc, log_path = await activate(config, [otlp], "otlp")
    try:
        port = otlp.getsockname()[1]
        logs = ExportLogsServiceRequest()
        logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
        headers = {"Content-Type": "application/x-protobuf"}
        async with aiohttp.ClientSession() as http:  # sent before the daemon is up: it waits in the backlog
            url = f"http://127.0.0.1:{port}/v1/logs"
            async with http.post(url, data=logs.SerializeToString(), headers=headers) as response:
                assert response.status == 200, await response.read()
        await wait_for(lambda: [r.path for r in remote.received] == ["/v1/logs"], timeout=30)
        assert refuses(configured), "bound [otlp] http although an otlp listener was inherited"
    finally:
        assert await stop(proc) == 0, log_path.read_text()
        otlp.close()


async def test_an_otlp_listener_with_no_route_stops_the_daemon_with_a_reason(
    tmp_path: Path, remote: FakeRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    for role in ("INGEST", "DELIVERY"):
        monkeypatch.setenv(f"SHIPPER__DAEMON__{role}_WORKERS", "0")
    otlp = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        proc, log_path = await activate(write_config(tmp_path, sink(remote)), [otlp], "otlp")
        assert await asyncio.wait_for(proc.wait(), 30) == 2
    finally:
        otlp.close()
    assert "otlp.route: empty, yet an otlp listener was inherited" in log_path.read_text()
