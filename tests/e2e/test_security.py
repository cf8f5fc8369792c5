"""Security, end to end: who may write, where requests may go, and what never leaks.

- A TCP listener off loopback needs `[ingest] token` or the daemon refuses to start (configured or inherited).
- With a token, TCP requests need `X-Shipper-Token` or `Authorization: Bearer`; the Unix socket and /healthz don't;
  the token is never taken for, stored as or forwarded as a vendor's API key.
- Paths in records and on drop-in routes (`//host`, `../`, absolute URLs, `@`, CRLF, backslashes, percent-encoding)
  never send anything to another host: a second "evil" remote must receive nothing; redirects are not followed;
  a proxied call's query string reaches the vendor as the app sent it.
- The Unix socket gets `unix_mode` and `unix_group`; spool files are 0600 whatever the umask.
- No secret (ingest token, sink credentials, an app's API key) appears in logs, metrics, status or dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from shipper.spool.reader import SpoolReader, read
from tests.fakes import KeywordsAIFake
from tests.hardening import Answer, http_sink, item, numbers, post_records, send
from tests.support import (
    Daemon,
    FakeRemote,
    free_port,
    run_cli,
    run_cli_async,
    unix_session,
    wait_for,
    write_config,
)

TOKEN = "tok-ingest-S3CRET-0001"


def exposed_config(tmp_path: Path, sinks: str, address: str, ingest_extra: str = "") -> Path:
    """A config whose TCP listener is `address` (host:port) instead of loopback."""
    config = write_config(tmp_path, sinks, ingest_extra=ingest_extra)
    text = config.read_text()
    start = text.index('http = "') + len('http = "')
    config.write_text(text[:start] + address + text[text.index('"', start) :])
    return config


@pytest.fixture
async def evil() -> AsyncIterator[FakeRemote]:
    """Where no request may ever go."""
    server = FakeRemote()
    await server.start()
    yield server
    await server.stop()


# --- exposure -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:{port}", "[::]:{port}", "192.0.2.10:{port}", "example.com:{port}"])
def test_a_non_loopback_listener_without_a_token_is_refused_naming_the_key(tmp_path: Path, address: str) -> None:
    config = exposed_config(tmp_path, http_sink("http://127.0.0.1:9"), address.format(port=free_port()))
    for command in ("run", "check-config"):
        code, out, err = run_cli(command, "--config", str(config))
        assert code == 2, (out, err)
        # The message names the setting at fault and the one that would allow it.
        assert "ingest" in err and "http" in err and "token" in err, err
    assert not (tmp_path / "spool.db").exists()


def test_a_non_loopback_listener_set_from_the_environment_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, http_sink("http://127.0.0.1:9"))
    monkeypatch.setenv("SHIPPER__INGEST__HTTP", f"0.0.0.0:{free_port()}")
    code, _, err = run_cli("run", "--config", str(config))
    assert code == 2 and "token" in err, err


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "127.0.0.2:{port}"])
def test_loopback_listeners_need_no_token(tmp_path: Path, address: str) -> None:
    config = exposed_config(tmp_path, http_sink("http://127.0.0.1:9"), address.format(port=free_port()))
    code, _, err = run_cli("check-config", "--config", str(config))
    assert code == 0, err


# What systemd does between fork and exec for socket activation (see tests/integration/test_activation.py).
ACTIVATE = """
import fcntl, os, sys
fd = int(os.environ.pop("TEST_LISTEN_SOURCE"))
high = fcntl.fcntl(fd, fcntl.F_DUPFD, 100)
os.close(fd)
os.dup2(high, 3)
os.close(high)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "shipper", *sys.argv[1:]])
"""


async def test_an_inherited_non_loopback_tcp_listener_without_a_token_is_refused(tmp_path: Path) -> None:
    """Socket activation must not be a way around the token rule: a unit listening on 0.0.0.0 without a token."""
    listener = socket.create_server(("0.0.0.0", 0), backlog=16)
    config = write_config(tmp_path, http_sink("http://127.0.0.1:9"))
    env = {**os.environ, "TEST_LISTEN_SOURCE": str(listener.fileno()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ACTIVATE, "run", "--config", str(config),
        pass_fds=[listener.fileno()], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 15)
        except TimeoutError:
            port = listener.getsockname()[1]
            async with aiohttp.ClientSession() as session:
                answer = await post_records(session, f"http://127.0.0.1:{port}/v1/records", [item(1)])
            raise AssertionError(
                f"the daemon serves an inherited 0.0.0.0:{port} listener with no token (a write got {answer.status})"
            ) from None
        assert proc.returncode == 2, err
        assert b"token" in err, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        listener.close()


# --- the token ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def guarded(tmp_path: Path, remote: FakeRemote) -> AsyncIterator[Daemon]:
    """Listening on every address, with a token."""
    config = exposed_config(
        tmp_path, http_sink(remote.url), f"0.0.0.0:{free_port()}", ingest_extra=f'token = "{TOKEN}"'
    )
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        yield daemon
    finally:
        assert await daemon.terminate() == 0


def queued(daemon: Daemon) -> int:
    return read(daemon.config.parent / "spool.db", SpoolReader.waiting)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Shipper-Token": "wrong"},
        {"X-Shipper-Token": TOKEN[:-1]},
        {"X-Shipper-Token": TOKEN + "x"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "prefix", "longer", "wrong-bearer", "basic", "bare"],
)
async def test_without_the_token_tcp_requests_get_401_invalid_token_and_nothing_is_spooled(
    guarded: Daemon, remote: FakeRemote, headers: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as session:
        base = f"http://{guarded.http}"
        answer = await post_records(session, f"{base}/v1/records", [item(1)], headers)
        assert answer.status == 401, answer.raw
        assert answer.json()["error"] == "invalid_token"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/metrics", "/v1/status", "/readyz"):
            assert (await send(session, "GET", base + path, headers=headers)).status == 401, path
        assert (await send(session, "GET", f"{base}/healthz")).status == 200
    assert queued(guarded) == 0 and remote.attempts == 0


@pytest.mark.parametrize(
    "headers",
    [{"X-Shipper-Token": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"bearer {TOKEN}"}],
    ids=["x-shipper-token", "bearer", "bearer-lowercase"],
)
async def test_with_the_token_in_either_header_tcp_requests_are_served(
    guarded: Daemon, remote: FakeRemote, headers: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as session:
        base = f"http://{guarded.http}"
        answer = await post_records(session, f"{base}/v1/records", [item(1)], headers)
        assert answer.status == 202, answer.raw
        metrics = await send(session, "GET", f"{base}/metrics", headers=headers)
        assert metrics.status == 200
        assert b'reason="invalid_token"' not in metrics.raw
    await wait_for(lambda: numbers(remote) == [1], timeout=10)
    # The remote never sees shipper's own token.
    assert all(TOKEN not in str(r.headers) for r in remote.received)


async def test_the_unix_socket_needs_no_token(guarded: Daemon, remote: FakeRemote) -> None:
    async with unix_session(guarded.unix) as session:
        answer = await post_records(session, "http://localhost/v1/records", [item(2)])
        assert answer.status == 202, answer.raw
    await wait_for(lambda: numbers(remote) == [2], timeout=10)


@pytest.fixture
async def kw_guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Daemon, KeywordsAIFake]]:
    """A Keywords AI sink (whose SDK sends its key as `Authorization: Bearer`, like shipper's token) with its own
    key, behind a token."""
    monkeypatch.setenv("KW_SINK_KEY", "kw-sink-key-777")
    async with KeywordsAIFake(api_keys=("kw-sink-key-777", "kw-app-key-888", TOKEN)) as fake:
        sinks = f"""
[sinks.kw]
type = "keywordsai"
base_url = "{fake.url}"
api_key_env = "KW_SINK_KEY"
retry_initial_backoff = 0.02
retry_max_backoff = 0.2
"""
        config = write_config(tmp_path, sinks, ingest_extra=f'token = "{TOKEN}"')
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            yield daemon, fake
        finally:
            assert await daemon.terminate() == 0


KW_LOG = {"model": "gpt-4o-mini", "prompt_messages": [{"role": "user", "content": "hi"}],
          "completion_message": {"role": "assistant", "content": "hello"}}  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "key_used"),
    [
        ({"Authorization": f"Bearer {TOKEN}"}, "kw-sink-key-777"),
        ({"X-Shipper-Token": TOKEN, "Authorization": "Bearer kw-app-key-888"}, "kw-app-key-888"),
        ({"X-Shipper-Token": TOKEN, "Authorization": f"Bearer {TOKEN}"}, "kw-sink-key-777"),
    ],
    ids=["token-as-bearer", "token-header-and-app-key", "token-in-both-headers"],
)
async def test_the_token_is_never_stored_or_forwarded_as_a_vendor_api_key(
    kw_guarded: tuple[Daemon, KeywordsAIFake], headers: dict[str, str], key_used: str
) -> None:
    daemon, fake = kw_guarded
    async with aiohttp.ClientSession() as session:
        answer = await send(
            session,
            "POST",
            f"http://{daemon.http}/api/request-logs/create/",
            orjson.dumps(KW_LOG),
            {"Content-Type": "application/json", **headers},
        )
        assert answer.status == 200, answer.raw
    await wait_for(lambda: len(fake.attempts) >= 1, timeout=10)
    assert fake.keys_used() == {key_used}
    stored = [stored.value for stored in read(daemon.config.parent / "spool.db", SpoolReader.credentials)]
    assert TOKEN not in stored


# --- where requests may go ----------------------------------------------------------------------------------------


def hostile_paths(evil: FakeRemote) -> list[str]:
    host = f"127.0.0.1:{evil.port}"
    return [
        f"//{host}/x",
        f"///{host}/x",
        f"/..//{host}/x",
        "/../x",
        "/a/../../x",
        "/a/./x",
        "/%2e%2e/x",
        "/%2E%2e/%2e%2E/x",
        "/a/..%2F..%2Fx",
        f"/%2F%2F{host}/x",
        f"/%2f{host}/x",
        f"http://{host}/x",
        f"https://{host}/x",
        f"@{host}/x",
        f"/@{host}/x",
        f"/x@{host}",
        f"\\\\{host}\\x",
        f"/\\{host}/x",
        f"/%5C%5C{host}/x",
        f"/x\r\nHost: {host}",
        f"/x%0d%0aHost:%20{host}",
        f"/x HTTP/1.1\r\nHost: {host}\r\n\r\nGET /",
        f"/x?url=http://{host}",
        f"/x#http://{host}",
        f"/x%23{host}",
        f"/x%3F{host}",
        f"/%00{host}",
        f"/%252e%252e/{host}",
        "",
        "/ok/plain",
    ]


async def test_no_record_path_sends_a_request_to_another_host(
    tmp_path: Path, remote: FakeRemote, evil: FakeRemote
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url + "/base")))
    await daemon.start()
    accepted: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            for n, path in enumerate(hostile_paths(evil)):
                record = {"sink": "remote", "path": path, "body": {"n": n}}
                answer = await post_records(session, f"http://{daemon.http}/v1/records", [record])
                if answer.status == 202:
                    accepted.append(n)
                else:
                    assert answer.status == 422, (path, answer.raw)
                    assert answer.json()["field"] == "path", (path, answer.raw)
            # Queries are encoded, never pasted: their characters cannot end the path or add a header.
            query = {"q": f"a#b\r\nHost: 127.0.0.1:{evil.port}", "x@y": "1", "u": f"//127.0.0.1:{evil.port}"}
            answer = await post_records(
                session,
                f"http://{daemon.http}/v1/records",
                [{"sink": "remote", "path": "/q", "query": query, "body": {"n": 100}}],
            )
            assert answer.status == 202, answer.raw
        await wait_for(lambda: set(numbers(remote)) >= {*accepted, 100}, timeout=20)
        await asyncio.sleep(0.3)  # anything headed elsewhere has had its chance
        assert evil.attempts == 0
        assert all(r.path.startswith("/base") for r in remote.received), [r.path for r in remote.received]
        (sent,) = [r for r in remote.received if r.json()["n"] == 100]
        assert sent.query == {k: str(v) for k, v in query.items()}
        assert "evil" not in str(sent.headers) and sent.headers["Host"] == f"127.0.0.1:{remote.port}"
        assert hostile_paths(evil).index("/ok/plain") in accepted
    finally:
        assert await daemon.terminate() == 0


async def raw_request(host: str, port: int, target: str, headers: dict[str, str]) -> int:
    """Send a request line exactly as given (no client-side normalisation); returns the status, 0 if none."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 15)
        return int(head.split(b" ", 2)[1])
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0
    finally:
        writer.close()


async def test_no_drop_in_path_proxies_a_request_to_another_host(
    tmp_path: Path, remote: FakeRemote, evil: FakeRemote
) -> None:
    sinks = f"""
[sinks.hl]
type = "humanloop"
base_url = "{remote.url}/v5"
[sinks.kw]
type = "keywordsai"
base_url = "{remote.url}"
[sinks.fp]
type = "freeplay"
base_url = "{remote.url}/api"
"""
    daemon = Daemon.from_config(write_config(tmp_path, sinks))
    await daemon.start()
    host = f"127.0.0.1:{evil.port}"
    targets = [
        f"//{host}/v5/prompts",
        f"http://{host}/v5/prompts",
        f"/v5//{host}/x",
        f"/v5/%2F%2F{host}/x",
        f"/v5/%2f%2F{host}",
        "/v5/../../x",
        "/v5/%2e%2e/%2e%2e/x",
        "/v5/..%2F..%2Fx",
        f"/v5/@{host}/x",
        f"/v5/http://{host}/x",
        f"/v5/x%0d%0aHost:%20{host}",
        f"/v5/x%5c%5c{host}",
        f"/v5/%5C{host}",
        "/v5/x%00y",
        f"/api/v2/..%2F..%2F{host}",
        f"/api/v2/%2F%2F{host}/x",
        f"/v2//{host}/x",
        f"/api/request-logs/%2F%2F{host}",
        f"/api/request-logs//{host}/x",
        f"/request-logs/..%2F..%2F{host}",
        f"/api/request-logs/x?next=http://{host}/",
    ]
    auth = {"X-API-KEY": "k", "Authorization": "Bearer k"}
    try:
        http_host, port = daemon.http.rsplit(":", 1)
        for target in targets:
            status = await raw_request(http_host, int(port), target, auth)
            assert status != 500, target
        await asyncio.sleep(0.3)
        assert evil.attempts == 0
        prefixes = ("/v5/", "/api/")
        assert all(r.path.startswith(prefixes) for r in remote.received), [r.path for r in remote.received]
        assert not any(host in r.path for r in remote.received if "%" not in r.path and r.path.count("/") < 2)
    finally:
        assert await daemon.terminate() == 0


async def test_redirects_from_a_remote_are_never_followed(tmp_path: Path, remote: FakeRemote, evil: FakeRemote) -> None:
    def redirect(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=307, headers={"Location": f"{evil.url}/stolen"})

    remote.behaviour = redirect
    sinks = http_sink(remote.url) + f'\n[sinks.hl]\ntype = "humanloop"\nbase_url = "{remote.url}/v5"\n'
    daemon = Daemon.from_config(write_config(tmp_path, sinks))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert (await post_records(session, f"http://{daemon.http}/v1/records", [item(1)])).status == 202
            proxied = await send(session, "GET", f"http://{daemon.http}/v5/prompts", headers={"X-API-KEY": "k"})
            assert proxied.status == 307  # handed back to the app as the vendor said it, not followed
        await wait_for(lambda: remote.attempts >= 2, timeout=10)
        await asyncio.sleep(0.3)
        assert evil.attempts == 0
    finally:
        assert await daemon.terminate() == 0


async def test_a_proxied_calls_query_string_reaches_the_vendor_as_the_app_sent_it(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """Percent-encoded `&`, `=`, `#` and `+` in a value are data: decoding them would add or cut parameters."""
    sinks = f'[sinks.hl]\ntype = "humanloop"\nbase_url = "{remote.url}/v5"\n'
    daemon = Daemon.from_config(write_config(tmp_path, sinks))
    await daemon.start()
    try:
        http_host, port = daemon.http.rsplit(":", 1)
        target = "/v5/prompts?name=a%26admin%3Dtrue&tag=%23x&sp=a%2Bb&plain=ok"
        status = await raw_request(http_host, int(port), target, {"X-API-KEY": "k"})
        assert status == 200
        (seen,) = remote.received
        assert seen.path == "/v5/prompts"
        assert seen.query == {"name": "a&admin=true", "tag": "#x", "sp": "a+b", "plain": "ok"}, seen.query
    finally:
        assert await daemon.terminate() == 0


# --- files --------------------------------------------------------------------------------------------------------


def other_group() -> grp.struct_group | None:
    mine = os.getgid()
    for name in ("daemon", "nogroup", "users", "adm"):
        with contextlib.suppress(KeyError):
            found = grp.getgrnam(name)
            if found.gr_gid != mine:
                return found
    return None


async def test_the_unix_socket_takes_unix_mode_and_unix_group(tmp_path: Path, remote: FakeRemote) -> None:
    group = other_group()
    if group is None:
        pytest.skip("no second group on this system to give the socket to")
    extra = f'unix_mode = 0o640\nunix_group = "{group.gr_name}"'
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url), ingest_extra=extra))
    await daemon.start()
    try:
        info = daemon.unix.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o640
        assert info.st_gid == group.gr_gid
    finally:
        assert await daemon.terminate() == 0


def test_an_unknown_unix_group_stops_the_daemon_naming_the_key(tmp_path: Path, remote: FakeRemote) -> None:
    config = write_config(tmp_path, http_sink(remote.url), ingest_extra='unix_group = "no-such-group-h6"')
    code, _, err = run_cli("run", "--config", str(config))
    assert code != 0
    assert "unix_group" in err, err


async def test_spool_files_are_owner_only_even_with_a_permissive_umask(tmp_path: Path, remote: FakeRemote) -> None:
    remote.behaviour = lambda request, body: web.json_response({"error": "down"}, status=503)
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url)))
    previous = os.umask(0)
    try:
        await daemon.start()
    finally:
        os.umask(previous)
    try:
        async with aiohttp.ClientSession() as session:
            assert (await post_records(session, f"http://{daemon.http}/v1/records", [item(1)])).status == 202
        modes = {
            name: stat.S_IMODE((tmp_path / name).stat().st_mode)
            for name in ("spool.db", "spool.db-wal", "spool.db-shm", "spool.db.lock")
            if (tmp_path / name).exists()
        }
        assert {"spool.db", "spool.db-wal", "spool.db.lock"} <= set(modes)
        assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    finally:
        assert await daemon.terminate() == 0


# --- secrets ------------------------------------------------------------------------------------------------------

SINK_SECRET = "Bearer sink-S3CRET-0002"
APP_KEY = "app-S3CRET-0003"


async def everything_shown(daemon: Daemon, config: Path, headers: dict[str, str]) -> dict[str, str]:
    """Every place an operator looks: logs, metrics, live status, `shipper status`, the dead-letter views."""
    shown: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/v1/status", "/readyz"):
            answer: Answer = await send(session, "GET", f"http://{daemon.http}{path}", headers=headers)
            shown[path] = answer.raw.decode()
    for args in (("status", "--json"), ("status",), ("dlq", "list", "--json"), ("dlq", "list"), ("check-config",)):
        code, out, err = await run_cli_async(*args, "--config", str(config))
        assert code == 0, err
        shown[" ".join(args)] = out + err
    code, out, _ = await run_cli_async("dlq", "list", "--json", "--config", str(config))
    for entry in orjson.loads(out):
        code, shown_one, err = await run_cli_async("dlq", "show", str(entry["id"]), "--config", str(config))
        assert code == 0, err
        shown[f"dlq show {entry['id']}"] = shown_one
    shown["logs"] = daemon.logs()
    return shown


async def test_no_secret_appears_in_logs_metrics_status_or_dead_letters(
    tmp_path: Path, remote: FakeRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H6_SINK_AUTH", SINK_SECRET)

    def judge(request: web.Request, body: bytes) -> web.Response | None:
        if b'"poison"' in body:
            return web.json_response({"error": "schema says no"}, status=400)
        if remote.attempts % 3 == 0:
            return web.json_response({"error": "busy"}, status=503)
        return None

    remote.behaviour = judge
    async with KeywordsAIFake(api_keys=("some-other-key",)) as kw:
        sinks = (
            http_sink(remote.url, extra='auth_env = "H6_SINK_AUTH"')
            + f"""
[sinks.kw]
type = "keywordsai"
base_url = "{kw.url}"
"""
        )
        config = write_config(tmp_path, sinks, ingest_extra=f'token = "{TOKEN}"', daemon_extra='log_level = "debug"')
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            headers = {"X-Shipper-Token": TOKEN}
            async with aiohttp.ClientSession() as session:
                url = f"http://{daemon.http}/v1/records"
                items = [item(n) for n in range(20)] + [item(99, poison=True)]
                assert (await post_records(session, url, items, headers)).status == 202
                answer = await send(
                    session,
                    "POST",
                    f"http://{daemon.http}/api/request-logs/create/",
                    orjson.dumps(KW_LOG),
                    {"Content-Type": "application/json", "Authorization": f"Bearer {APP_KEY}", **headers},
                )
                assert answer.status == 200, answer.raw
            # The remote took the sink's credential; Keywords AI refused the app's key for good (401).
            await wait_for(lambda: len(numbers(remote)) >= 20, timeout=20)
            assert remote.received[0].headers["Authorization"] == SINK_SECRET
            await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.dead_count) == 2, timeout=20)
            shown = await everything_shown(daemon, config, headers)
        finally:
            assert await daemon.terminate() == 0
    shown["logs"] = daemon.logs()
    for where, text in shown.items():
        for secret in (TOKEN, SINK_SECRET, SINK_SECRET.split()[1], APP_KEY):
            assert secret not in text, f"{secret!r} shown in {where}"


async def test_a_remote_echoing_our_credential_in_its_error_does_not_put_it_in_logs_status_or_dead_letters(
    tmp_path: Path, remote: FakeRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remotes do quote the key they refused ("invalid API key: sk-..."). shipper knows its secrets and must not
    copy them from an answer into what operators read."""
    monkeypatch.setenv("H6_SINK_AUTH", SINK_SECRET)

    def echo(request: web.Request, body: bytes) -> web.Response:
        status = 503 if remote.attempts <= 3 else 401
        quoted = request.headers.get("Authorization", "")
        return web.json_response({"error": f"invalid credentials: {quoted}"}, status=status)

    remote.behaviour = echo
    config = write_config(tmp_path, http_sink(remote.url, extra='auth_env = "H6_SINK_AUTH"'))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert (await post_records(session, f"http://{daemon.http}/v1/records", [item(1)])).status == 202
        # The 401 refuses the sink's own key: the row is held and the answer shown as the sink's last error.
        await daemon.wait_for_log("refused the sink's API key")
        shown = await everything_shown(daemon, config, {})
    finally:
        assert await daemon.terminate() == 0
    shown["logs"] = daemon.logs()
    leaks = [where for where, text in shown.items() if SINK_SECRET.split()[1] in text]
    assert not leaks, f"the sink's credential, echoed by the remote, is shown in: {leaks}"


async def test_shipper_status_still_sees_a_running_daemon_that_listens_only_on_tcp_behind_a_token(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """The CLI reads the same config, token included: it must not report a live, token-guarded daemon as stopped."""
    config = write_config(tmp_path, http_sink(remote.url), ingest_extra=f'token = "{TOKEN}"')
    text = config.read_text()
    start = text.index('unix = "')
    config.write_text(text[:start] + 'unix = ""' + text[text.index("\n", start) :])
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        code, out, err = await run_cli_async("status", "--json", "--config", str(config))
        assert code == 0, err
        view = orjson.loads(out)
        assert view["daemon"]["running"] is True, view["daemon"]
        assert TOKEN not in out
    finally:
        assert await daemon.terminate() == 0
