"""Starting: what an operator (and systemd) sees when the daemon cannot start.

Every start-up failure is one `shipper: …` line naming the key and the address or file, with exit code 2 (the
unit's RestartPreventExitStatus, so systemd does not restart it in a loop), never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import run_cli_async, write_config

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


async def test_a_socket_group_that_does_not_exist_is_one_line_and_leaves_no_socket_behind(tmp_path: Path) -> None:
    config = write_config(tmp_path, file_sink(tmp_path), ingest_extra='unix_group = "shipper-no-such-group"')
    line = await start_failure(config)
    assert line.startswith("shipper: ingest.unix_group: cannot give the socket to 'shipper-no-such-group'")
    assert not (tmp_path / "shipper.sock").exists()
