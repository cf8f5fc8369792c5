"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.notify import Notifier, watchdog_interval


class Manager:
    """The service manager's end: a bound datagram socket that collects what the daemon says."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(str(tmp_path / "notify.sock"))
    yield m
    m.sock.close()


@pytest.fixture
def notifier(tmp_path: Path, manager: Manager) -> Iterator[Notifier]:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    yield n
    n.close()


def watchdog_notifier(tmp_path: Path, usec: int) -> Notifier:
    return Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": str(usec)})


async def test_without_notify_socket_every_call_is_a_quiet_noop() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert not notifier.watchdog()
    async with notifier.watchdog_running():  # no watchdog configured: the task ends at once
        pass
    await asyncio.wait_for(notifier.run_watchdog(), 1)
    notifier.close()


def test_ready_status_and_stopping_arrive_as_one_datagram_each(notifier: Notifier, manager: Manager) -> None:
    assert notifier.ready()
    assert notifier.status("local: 3 queued, up")
    assert notifier.stopping()
    assert manager.messages() == ["READY=1", "STATUS=local: 3 queued, up", "STOPPING=1"]


def test_ready_and_stopping_can_carry_a_status_in_the_same_datagram(notifier: Notifier, manager: Manager) -> None:
    notifier.ready(status="serving")
    notifier.stopping(status="draining")
    assert manager.messages() == ["READY=1\nSTATUS=serving", "STOPPING=1\nSTATUS=draining"]


def test_a_newline_in_a_status_cannot_inject_another_assignment(notifier: Notifier, manager: Manager) -> None:
    notifier.status("fine\nREADY=1")
    assert manager.messages() == ["STATUS=fine READY=1"]


def test_reloading_carries_the_monotonic_clock_in_microseconds(notifier: Notifier, manager: Manager) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = manager.messages()
    fields = dict(line.split("=", 1) for line in message.splitlines())
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_an_abstract_socket_name_with_a_leading_at_sign_is_reached() -> None:
    name = f"shipper-test-{uuid.uuid4().hex}"
    manager = Manager("\0" + name)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.ready()
        assert manager.messages() == ["READY=1"]
    finally:
        notifier.close()
        manager.sock.close()


def test_an_unreachable_manager_is_logged_and_never_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.WARNING, "shipper.notify"):
        assert not notifier.ready()
        assert not notifier.watchdog()  # folded into the first line by the rate limit
    notifier.close()
    assert [r.getMessage() for r in caplog.records] == [
        "cannot notify the service manager: [Errno 2] No such file or directory"
    ]


def test_a_non_unix_notify_address_disables_notification(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "shipper.notify"):
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert "not an AF_UNIX address" in caplog.text


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),  # WatchdogSec=30: ping every 15 s
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),  # meant for us (pid 4242)
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_its_pid(
    environ: dict[str, str], interval: float | None
) -> None:
    assert watchdog_interval(environ, pid=4242) == interval


def test_watchdog_pid_defaults_to_this_process(tmp_path: Path) -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 1.0


async def test_watchdog_pings_at_half_the_interval_while_the_loop_runs(tmp_path: Path, manager: Manager) -> None:
    notifier = watchdog_notifier(tmp_path, 200_000)  # ping every 0.1 s
    async with notifier.watchdog_running():
        await asyncio.sleep(0.55)  # pings at 0, 0.1, ..., 0.5
    await asyncio.sleep(0.25)
    notifier.close()
    pings = manager.messages()
    assert set(pings) == {"WATCHDOG=1"}
    assert 4 <= len(pings) <= 7, pings  # no more after the block ended


async def test_a_stalled_event_loop_stops_the_watchdog_pings(tmp_path: Path, manager: Manager) -> None:
    """The point of pinging from the loop: while it is blocked, systemd hears nothing and can restart us."""
    notifier = watchdog_notifier(tmp_path, 200_000)
    async with notifier.watchdog_running():
        await asyncio.sleep(0)  # the first ping
        time.sleep(0.6)  # a stalled loop: six intervals without a chance to ping  # noqa: ASYNC251
        await asyncio.sleep(0)
    notifier.close()
    assert len(manager.messages()) <= 2


async def test_status_loop_sends_only_when_the_text_changes(notifier: Notifier, manager: Manager) -> None:
    texts = iter(["local: 0 queued, up", "local: 0 queued, up", "local: 5 queued, backing_off"])
    asked = 0
    enough = asyncio.Event()

    def describe() -> str:
        nonlocal asked
        asked += 1
        if asked == 6:
            enough.set()
        return next(texts, "local: 5 queued, backing_off")

    async with notifier.status_running(describe, interval=0.01):
        await asyncio.wait_for(enough.wait(), 5)
    assert manager.messages() == ["STATUS=local: 0 queued, up", "STATUS=local: 5 queued, backing_off"]


async def test_status_loop_survives_a_failing_description(notifier: Notifier, manager: Manager) -> None:
    calls = 0
    enough = asyncio.Event()

    def describe() -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            enough.set()
        if calls == 1:
            raise RuntimeError("not yet")
        return "local: 1 queued, up"

    async with notifier.status_running(describe, interval=0.01):
        await asyncio.wait_for(enough.wait(), 5)
    assert manager.messages() == ["STATUS=local: 1 queued, up"]
