"""Starting: what an operator (and systemd) sees when the daemon cannot start, and who owns the Unix socket.

Every start-up failure is one `shipper: …` line naming the key and the address or file, with exit code 2 (the
unit's RestartPreventExitStatus, so systemd does not restart it in a loop), never a traceback. A second daemon with
its own spool but the same `[ingest] unix` path is refused while the first one serves on it; a stale socket file
(nobody listening) is still replaced.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, FakeRemote, post_items, run_cli_async, unix_session, wait_for, write_config

pytestmark = pytest.mark.supervised

FILE_SINK = '[sinks.local]\ntype = "file"\npath = "{out}"\n'


def file_sink(tmp_path: Path) -> str:
    return FILE_SINK.format(out=tmp_path / "out.ndjson")


async def start_failure(config: Path, command: str = "run") -> str:
    """`shipper run` that must fail at start: exit 2 and exactly one stderr line, `shipper: …`; returns that line."""
    code, out, err = await run_cli_async(command, "--config", str(config), timeout=30)
    lines = err.splitlines()
    assert (code, out, len(lines)) == (2, "", 1), err
    assert lines[0].startswith("shipper: "), err
    return lines[0]


@contextlib.contextmanager
def unusable(directory: Path) -> Iterator[None]:
    """A directory the daemon may not write in: mode 000, or for root (whom modes do not stop) immutable."""
    if os.geteuid() != 0:
        directory.chmod(0)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: no directory is unusable to root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


async def test_a_busy_port_is_one_line_naming_the_address_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = await start_failure(write_config(tmp_path, file_sink(tmp_path), http_port=port))
    assert line == f"shipper: ingest.http: cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_a_spool_directory_without_permission_is_one_line_naming_it_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, file_sink(tmp_path))
    locked = tmp_path / "locked"
    locked.mkdir()
    config.write_text(config.read_text().replace(str(tmp_path / "spool.db"), str(locked / "spool.db")))
    with unusable(locked):
        line = await start_failure(config)
    assert line.startswith(f"shipper: spool.path: cannot use {locked / 'spool.db'}: ") and str(locked) in line


@pytest.mark.parametrize("command", ["run", "check-config"])
async def test_a_missing_ca_file_is_one_line_naming_the_sinks_key_and_exit_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-ca.pem"
    sink = f'[sinks.remote]\ntype = "http"\nbase_url = "https://127.0.0.1:9"\nca_file = "{missing}"\n'
    line = await start_failure(write_config(tmp_path, sink), command)
    assert line == f"shipper: sinks.remote.ca_file: cannot load {missing}: No such file or directory"


async def test_a_file_sink_that_cannot_open_its_file_is_one_line_naming_the_sink_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, FILE_SINK.format(out="/dev/null/out.ndjson"))
    line = await start_failure(config)
    assert "sinks.local: cannot start" in line and "/dev/null" in line, line


async def test_a_socket_group_that_does_not_exist_is_one_line_and_leaves_no_socket_behind(tmp_path: Path) -> None:
    config = write_config(tmp_path, file_sink(tmp_path), ingest_extra='unix_group = "shipper-no-such-group"')
    line = await start_failure(config)
    assert line.startswith("shipper: ingest.unix_group: cannot give the socket to 'shipper-no-such-group'")
    assert not (tmp_path / "shipper.sock").exists()


# -- two daemons, one socket ----------------------------------------------------------------------------------


def same_socket_other_spool(first: Daemon, directory: Path) -> Path:
    """A second daemon's config: its own spool and port, the first one's `[ingest] unix` path."""
    directory.mkdir()
    config = write_config(directory, file_sink(directory))
    own = Daemon.from_config(config)
    config.write_text(config.read_text().replace(str(own.unix), str(first.unix)))
    return config


async def test_a_second_daemon_with_another_spool_is_refused_the_live_socket_naming_it_and_its_holder(
    tmp_path: Path, remote: FakeRemote
) -> None:
    sink = f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\n'
    first = Daemon.from_config(write_config(tmp_path, sink))
    await first.start()
    try:
        assert first.proc is not None
        line = await start_failure(same_socket_other_spool(first, tmp_path / "second"))
        assert str(first.unix) in line and f"pid {first.proc.pid}" in line
        # The first daemon still owns and serves its socket.
        async with unix_session(first.unix) as unix:
            await post_items(unix, "http://localhost/v1/records", [{"sink": "remote", "body": {"n": 1}}])
        await wait_for(lambda: len(remote.received) == 1, timeout=10)
    finally:
        assert await first.terminate() == 0
    assert not first.unix.exists()


async def test_a_socket_served_by_a_process_holding_no_lock_is_not_taken_over(tmp_path: Path) -> None:
    config = write_config(tmp_path, file_sink(tmp_path))
    path = Daemon.from_config(config).unix
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        line = await start_failure(config)
        assert line == f"shipper: ingest.unix: {path} is served by a live process that holds no lock on it"
        assert path.exists()


async def test_the_socket_left_by_a_killed_daemon_is_stale_and_replaced_by_the_next(tmp_path: Path) -> None:
    config = write_config(tmp_path, file_sink(tmp_path))
    killed = Daemon.from_config(config)
    await killed.start()
    await killed.kill9()
    assert killed.unix.exists()  # nobody removed it, nobody listens on it, nobody holds its lock
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with unix_session(daemon.unix) as unix, unix.get("http://localhost/healthz") as response:
            assert response.status == 200
    finally:
        assert await daemon.terminate() == 0


async def test_a_relay_without_its_stream_or_with_a_missing_secret_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, file_sink(tmp_path))
    code, _, err = await run_cli_async("run", "--role", "relay", "--config", str(config), timeout=30)
    assert (code, err.strip()) == (2, "shipper: [relay]: missing: a relay needs the stream it consumes (servers,"
                                      " stream, partitions)"), err  # fmt: skip
    relay = '[relay]\nservers = ["nats://127.0.0.1:9"]\nstream = "ROWS"\ntoken_env = "SHIPPER_TEST_NO_TOKEN"\n'
    config = write_config(tmp_path, file_sink(tmp_path), extra=relay)
    for command in (("run", "--role", "relay"), ("check-config",)):
        code, _, err = await run_cli_async(*command, "--config", str(config), timeout=30)
        assert (code, err.strip()) == (
            2,
            "shipper: relay.token_env: environment variable SHIPPER_TEST_NO_TOKEN is not set",
        )
