"""Socket activation: reading LISTEN_* (sd_listen_fds) and sorting inherited sockets into roles, with real sockets.

Passing real fds at 3, 4, … to a real daemon is tests/integration/test_activation.py; here the protocol's edges.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.ingest.activation import ActivationError, Listeners, by_family, classify, inherited_listeners, listen_fds


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def tcp_listener(made: list[socket.socket]) -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    made.append(sock)
    return sock


def unix_listener(made: list[socket.socket], path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    made.append(sock)
    return sock


def test_no_listen_fds_means_nothing_inherited() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    assert listen_fds(env) == []
    assert env == {"PATH": "/bin"}


def test_fds_meant_for_another_process_are_ignored_and_the_variables_still_removed() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "unix:http", "PATH": "/bin"}
    assert listen_fds(env, pid=4242) == []
    assert env == {"PATH": "/bin"}


def test_listen_pid_is_required() -> None:
    env = {"LISTEN_FDS": "1"}
    assert listen_fds(env, pid=4242) == []
    assert env == {}


def test_the_real_environment_is_cleaned_so_children_do_not_inherit_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "0")
    monkeypatch.setenv("LISTEN_FDNAMES", "")
    assert inherited_listeners().http == ()
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_FDS": "two"}, "LISTEN_FDS='two' is not a number"),
        ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}, "LISTEN_FDNAMES has 1 name(s) for LISTEN_FDS=2"),
    ],
)
def test_malformed_variables_are_refused_with_a_reason(env: dict[str, str], message: str) -> None:
    env = {**env, "LISTEN_PID": "4242"}
    with pytest.raises(ActivationError) as error:
        listen_fds(env, pid=4242)
    assert str(error.value) == message
    assert env == {}


def test_an_fd_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    """A regular file stands in at fd 3 for the duration (whatever the test process had there is put back)."""
    try:
        saved: int | None = os.dup(3)
    except OSError:
        saved = None
    with open(tmp_path / "file", "wb") as handle:
        os.dup2(handle.fileno(), 3)
    try:
        with pytest.raises(ActivationError, match=r"inherited fd 3 \(unnamed\) is not a socket"):
            listen_fds({"LISTEN_PID": "4242", "LISTEN_FDS": "1"}, pid=4242)
    finally:
        if saved is None:
            os.close(3)
        else:
            os.dup2(saved, 3)
            os.close(saved)


def test_sockets_without_a_known_name_are_sorted_by_family(sockets: list[socket.socket], tmp_path: Path) -> None:
    tcp = tcp_listener(sockets)
    unix = unix_listener(sockets, tmp_path / "a.sock")
    listeners = classify([("shipper.socket", unix), ("shipper.socket", tcp)])
    assert listeners.http == (tcp,)
    assert listeners.unix == (unix,)


def test_every_socket_of_a_role_is_served(sockets: list[socket.socket]) -> None:
    first, second = tcp_listener(sockets), tcp_listener(sockets)
    assert classify([("", first), ("", second)]).http == (first, second)


def test_ipv6_sockets_serve_http(sockets: list[socket.socket]) -> None:
    try:
        sock = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sockets.append(sock)
    assert classify([("http", sock)]).http == (sock,)


def test_a_name_that_contradicts_the_family_is_refused(sockets: list[socket.socket]) -> None:
    tcp = tcp_listener(sockets)
    with pytest.raises(ActivationError, match=r"\(unix\) has family AF_INET, which cannot serve unix"):
        classify([("unix", tcp)])


def test_a_socket_that_is_not_listening_is_refused(sockets: list[socket.socket]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sockets.append(sock)
    sock.bind(("127.0.0.1", 0))
    with pytest.raises(ActivationError, match="is not a listening stream socket"):
        classify([("http", sock)])


def test_a_datagram_socket_is_refused(sockets: list[socket.socket]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets.append(sock)
    sock.bind(("127.0.0.1", 0))
    with pytest.raises(ActivationError, match=r"use ListenStream="):
        classify([("", sock)])


def test_a_tcp_or_unix_socket_named_otlp_serves_the_otlp_receiver(sockets: list[socket.socket], tmp_path: Path) -> None:
    ingest, otlp, otlp_unix = tcp_listener(sockets), tcp_listener(sockets), unix_listener(sockets, tmp_path / "o.sock")
    listeners = classify([("http", ingest), ("otlp", otlp), ("otlp", otlp_unix)])
    assert (listeners.http, listeners.unix, listeners.otlp) == ((ingest,), (), (otlp, otlp_unix))
    assert by_family(listeners.otlp) == Listeners(http=(otlp,), unix=(otlp_unix,))
