"""The shipped systemd units: `systemd-analyze verify` accepts them, they say what the README promises, and the
daemon really runs under the one hardening option that could break a Python program (MemoryDenyWriteExecute=).

`systemd-analyze verify` refuses an ExecStart= whose binary does not exist, and /usr/local/bin/shipper exists only
on an installed host; so the units are verified from a copy in tmp_path whose ExecStart= names this venv's
`shipper`, which keeps the test independent of where (or whether) shipper is installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest

from shipper.config import load_config
from shipper.config.listeners import parse_host_port
from shipper.config.process import DaemonConfig
from tests.support import REPO, FakeRemote, ndjson, wait_for, write_config

UNITS = REPO / "systemd"
Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections → key → every value in order (systemd keys may repeat). Comments and blank lines skipped."""
    unit: Unit = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        unit[section][key.strip()].append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key}= appears {len(values)} times in [{section}]"
    return values[0]


@pytest.fixture(scope="module")
def service() -> Unit:
    return parse_unit(UNITS / "shipper.service")


@pytest.fixture(scope="module")
def sock() -> Unit:
    return parse_unit(UNITS / "shipper.socket")


def verify(*units: Path) -> tuple[int, str]:
    """`systemd-analyze verify`; it exits 0 even for unknown keys or bad values (it only prints them), so the
    caller must also require silence."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def installed_copy(tmp_path: Path) -> tuple[Path, Path]:
    """Both units in tmp_path, ExecStart= pointing at this environment's `shipper` instead of /usr/local/bin."""
    binary = Path(sys.executable).with_name("shipper")
    if not binary.exists():
        pytest.skip(f"no shipper console script beside {sys.executable}")
    text = (UNITS / "shipper.service").read_text()
    assert "ExecStart=/usr/local/bin/shipper " in text
    service = tmp_path / "shipper.service"
    service.write_text(text.replace("ExecStart=/usr/local/bin/shipper ", f"ExecStart={binary} "))
    socket_unit = tmp_path / "shipper.socket"
    shutil.copy(UNITS / "shipper.socket", socket_unit)
    return service, socket_unit


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@needs_analyze
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    service, socket_unit = installed_copy(tmp_path)
    assert verify(socket_unit, service) == (0, "")


@needs_analyze
def test_the_verify_check_catches_a_mistake(tmp_path: Path) -> None:
    """Guards the test above: a typo must make `verify` speak, or silence would prove nothing."""
    service, _ = installed_copy(tmp_path)
    service.write_text(service.read_text().replace("Type=notify\n", "Type=notifyy\nProtectSystem=strictly\n"))
    _, output = verify(service)
    assert "Failed to parse service type, ignoring: notifyy" in output
    assert "ignoring: strictly" in output


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed here")
def test_sysusers_file_creates_the_user_and_group_the_units_run_as(tmp_path: Path, service: Unit, sock: Unit) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "--dry-run", str(UNITS / "shipper.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    user, group = one(service, "Service", "User"), one(service, "Service", "Group")
    assert f"Creating user '{user}'" in done.stdout + done.stderr
    assert f"Creating group '{group}'" in done.stdout + done.stderr
    assert (one(sock, "Socket", "SocketUser"), one(sock, "Socket", "SocketGroup")) == (user, group)


def test_service_is_notify_type_with_watchdog_restart_and_a_stop_timeout_above_the_drain(service: Unit) -> None:
    assert one(service, "Service", "Type") == "notify"
    assert one(service, "Service", "ExecStart") == "/usr/local/bin/shipper run --config /etc/shipper/shipper.toml"
    assert one(service, "Service", "ExecReload") == "kill -HUP $MAINPID"  # SIGHUP: reload the config
    assert one(service, "Service", "WatchdogSec") == "30"
    assert one(service, "Service", "Restart") == "on-failure"
    assert one(service, "Service", "RestartPreventExitStatus") == "2"  # a bad config: retrying cannot help
    assert int(one(service, "Service", "TimeoutStopSec")) >= 2 * DaemonConfig().drain_timeout


def test_service_has_state_runtime_directories_and_credentials(service: Unit) -> None:
    assert one(service, "Service", "StateDirectory") == "shipper"
    assert one(service, "Service", "RuntimeDirectory") == "shipper"
    assert one(service, "Service", "RuntimeDirectoryPreserve") == "yes"
    assert one(service, "Service", "UMask") == "0077"
    credentials = service["Service"]["LoadCredential"]
    assert "shipper.freeplay" in credentials
    assert all(":" not in c for c in credentials), "bare names: looked up in /etc/credstore, skipped when absent"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_service_is_hardened(service: Unit, key: str, value: str) -> None:
    assert one(service, "Service", key) == value


def test_service_filters_system_calls_to_the_service_set(service: Unit) -> None:
    assert service["Service"]["SystemCallFilter"][0] == "@system-service"


def test_the_units_environment_yields_a_valid_config_inside_the_sandboxs_writable_paths(service: Unit) -> None:
    env = dict(value.split("=", 1) for value in service["Service"]["Environment"])
    config = load_config(None, environ=env)
    state = Path("/var/lib") / one(service, "Service", "StateDirectory")
    runtime = Path("/run") / one(service, "Service", "RuntimeDirectory")
    assert config.spool.path.parent == state
    assert Path(config.ingest.unix).parent == runtime
    assert one(service, "Service", "WorkingDirectory") == str(state)


def test_socket_unit_listens_where_the_service_would_bind(service: Unit, sock: Unit) -> None:
    env = dict(value.split("=", 1) for value in service["Service"]["Environment"])
    unix, tcp = sock["Socket"]["ListenStream"]
    assert unix == env["SHIPPER__INGEST__UNIX"]
    assert parse_host_port(tcp) == parse_host_port(env["SHIPPER__INGEST__HTTP"])
    assert one(sock, "Socket", "Service") == "shipper.service"
    assert one(sock, "Socket", "SocketMode") == "0660"
    assert one(sock, "Install", "WantedBy") == "sockets.target"


# -- MemoryDenyWriteExecute=: the daemon under the kernel's own W^X lock -------------------------------------------

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # Linux >= 6.3; kept across fork and exec, like the seccomp filter

UNDER_MDWE = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.executable, [sys.executable, "-m", "shipper", *sys.argv[1:]])
"""


def mdwe_supported() -> bool:
    """Ask in a throwaway child: the setting cannot be undone, so never in the test process itself."""
    code = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return sys.platform == "linux" and subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.skipif(not mdwe_supported(), reason="prctl(PR_SET_MDWE) needs Linux >= 6.3")
async def test_daemon_serves_and_delivers_with_writable_executable_memory_forbidden(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """MemoryDenyWriteExecute=yes kills a process that maps W+X memory (a JIT, libffi closures); CPython, uvloop,
    aiohttp, orjson and SQLite must not need any."""
    sinks = f'[sinks.remote]\ntype = "http"\nbase_url = "{remote.url}"\n'
    config = write_config(tmp_path, sinks)
    http = load_config(config).ingest.http
    log_path = tmp_path / "mdwe.log"
    with open(log_path, "ab") as log:  # noqa: ASYNC230 - handed to the child
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", UNDER_MDWE, "run", "--config", str(config), stdout=log, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await wait_for(lambda: proc.returncode is not None or _healthy(http), timeout=30)
            assert proc.returncode is None, log_path.read_text()
            body = ndjson([{"sink": "remote", "path": "/in", "body": {"n": 1}}])
            headers = {"Content-Type": "application/x-ndjson"}
            async with session.post(f"http://{http}/v1/records", data=body, headers=headers) as response:
                assert response.status == 202, await response.text()
        await wait_for(lambda: remote.bodies() == [{"n": 1}], timeout=30)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()


def _healthy(http: str) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(parse_host_port(http)) == 0
