"""What the daemon writes to stderr: JSON lines by default (text on request), one line per state change rather than
one per attempt during an outage, one line on recovery, and never a record body or an API key, at any level."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support import Daemon, FakeRemote, post_items, run_cli_async, wait_for, write_config

pytestmark = pytest.mark.supervised

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEVELS = {"debug", "info", "warning", "error", "critical"}
MARKER = "BODY-MARKER-6c1e0f"
APP_KEY = "kw-app-key-SECRET-b71d03"
SINK_KEY = "kw-sink-key-SECRET-2f9a58"


def http_sink(url: str, *, initial: float = 0.01, cap: float = 0.05) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{url}"
retry_initial_backoff = {initial}
retry_max_backoff = {cap}
"""


def kw_sink(url: str, key_file: Path) -> str:
    key_file.write_text(SINK_KEY + "\n")
    key_file.chmod(0o600)
    return f"""
[sinks.kw]
type = "keywordsai"
base_url = "{url}"
api_key_file = "{key_file}"
retry_initial_backoff = 0.01
retry_max_backoff = 0.05
"""


class Script:
    """The remote answers from a script of statuses (then 200); a 400 or 401 answer echoes what it was sent."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)

    def __call__(self, request: web.Request, body: bytes) -> web.Response | None:
        if not self.statuses:
            return None
        status = self.statuses.pop(0)
        if status in (400, 401):
            echo = {"error": "bad", "got": body.decode(), "auth": request.headers.get("Authorization")}
            return web.json_response(echo, status=status)
        return web.json_response({"error": "unavailable"}, status=status)


async def exercise(daemon: Daemon, remote: FakeRemote, sink: str = "remote", path: str = "/in") -> None:
    """Records (with a marker in their bodies) that are delivered, retried and refused; bad requests too."""
    async with aiohttp.ClientSession() as session:
        url = f"http://{daemon.http}/v1/records"
        items = [{"sink": sink, "path": path, "body": {"n": n, "text": f"{MARKER}-{n}"}} for n in range(6)]
        headers = {"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/x-ndjson"}
        data = b"".join(orjson.dumps(item) + b"\n" for item in items)
        async with session.post(url, data=data, headers=headers) as response:
            assert response.status == 202, await response.text()
        bad = [
            (b'{"sink": "' + sink.encode() + b'", "body": "' + MARKER.encode() + b'"', "application/x-ndjson"),
            (orjson.dumps({"sink": "nonesuch", "body": MARKER}), "application/json"),
            (orjson.dumps({"sink": sink, "method": MARKER, "body": MARKER}), "application/json"),
        ]
        for data, content_type in bad:
            async with session.post(url, data=data, headers={**headers, "Content-Type": content_type}) as response:
                assert response.status in (400, 422)
    await wait_for(lambda: len(remote.received) == 5 and not remote.in_flight, timeout=20)


async def test_every_log_line_is_a_json_object_with_ts_level_logger_and_msg(tmp_path: Path, remote: FakeRemote) -> None:
    remote.behaviour = Script(503, 503, 400)
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url)))
    await daemon.start()
    try:
        await exercise(daemon, remote)
        daemon.sighup()  # unchanged config: a reload line
        await daemon.wait_for_log("configuration reloaded")
        daemon.config.write_text(daemon.config.read_text() + "\n[oops\n")
        daemon.sighup()
        await daemon.wait_for_log("reload refused")
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    lines = daemon.log_lines()
    assert len(lines) >= 6  # started, failing, dead-lettered, recovered, reloaded, refused, stopping, stopped
    for line in lines:
        entry = orjson.loads(line)
        assert isinstance(entry, dict), line
        # RFC 3339 in UTC with milliseconds, e.g. 2026-12-01T22:50:16.123Z.
        assert RFC3339_UTC.fullmatch(entry["ts"]), line
        assert abs(datetime.fromisoformat(entry["ts"]).timestamp() - time.time()) < 300, line
        assert entry["level"] in LEVELS, line
        assert isinstance(entry["logger"], str) and entry["logger"].startswith("shipper"), line
        assert isinstance(entry["msg"], str) and entry["msg"], line
    messages = [orjson.loads(line)["msg"] for line in lines]
    assert any("shipper started" in m for m in messages)
    assert any("shipper stopped" in m for m in messages)


async def test_log_format_text_writes_lines_for_people_not_json(tmp_path: Path, remote: FakeRemote) -> None:
    remote.behaviour = Script(503, 503, 400)
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url)))
    daemon.args = ("--log-format", "text")
    await daemon.start()
    try:
        await exercise(daemon, remote)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    lines = daemon.log_lines()
    assert lines
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        raise AssertionError(f"a JSON line in text format: {line}")
    assert all(RFC3339_UTC.match(line) for line in lines if not line.startswith((" ", "Traceback"))), lines
    # The structured fields JSON carries are there too, as key=value after the message.
    # Said by the supervisor (shipper.supervisor) or, in one process, by the daemon (shipper.daemon).
    (started,) = [line for line in lines if re.search(r" INFO shipper\.(supervisor|daemon): shipper started", line)]
    assert f'listen=["http://{daemon.http}","http://unix:{daemon.unix}:"]' in started, started
    assert 'sinks=["remote"]' in started, started
    assert any(" WARNING shipper.forward.forwarder: sink remote: delivery failing" in line for line in lines)
    (stopped,) = [line for line in lines if "shipper stopped" in line]
    assert '"remote":{"delivered":5,' in stopped and "queued=" in stopped, stopped


async def test_the_stop_line_says_how_long_the_daemon_ran_and_what_is_still_queued(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = lambda request, body: web.json_response(
        {"error": "down"}, status=503, headers={"Retry-After": "3600"}
    )
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url)))
    launched = time.monotonic()
    await daemon.start()
    running = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(
                session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": n}} for n in range(3)]
            )
        await wait_for(lambda: remote.attempts >= 1, timeout=10)
        await daemon.wait_for_log("delivery failing")
        stopping = time.monotonic()
        assert await daemon.terminate() == 0
        ended = time.monotonic()
    finally:
        await daemon.ensure_stopped()
    (stopped,) = [e for e in daemon.json_logs() if e["msg"].startswith("shipper stopped")]
    # It ran from before it was ready until it exited: at least the part this test watched, at most the whole.
    assert stopping - running <= stopped["uptime_seconds"] <= ended - launched, stopped
    assert 0 <= stopped["drain_seconds"] <= stopped["uptime_seconds"]
    assert stopped["queued"] == {"remote": 3}
    assert "still queued: remote 3" in stopped["msg"], stopped["msg"]
    assert re.search(r"after running \d+s \(drain \d+\.\d\ds\)", stopped["msg"]), stopped["msg"]


async def test_a_long_outage_logs_a_few_lines_not_one_per_attempt_and_recovery_logs_one(
    tmp_path: Path, remote: FakeRemote
) -> None:
    down = True
    refused = 0

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        nonlocal refused
        if down:
            refused += 1
            return web.json_response({"error": "unavailable"}, status=503)
        return None

    remote.behaviour = behave
    # Fast backoff: over 3 s the sink probes the remote dozens of times.
    daemon = Daemon.from_config(write_config(tmp_path, http_sink(remote.url, initial=0.01, cap=0.05)))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            items = [{"sink": "remote", "path": "/in", "body": {"n": n}} for n in range(50)]
            await post_items(session, f"http://{daemon.http}/v1/records", items)
        await asyncio.sleep(3)  # the outage: its length is the point
        down = False
        await wait_for(lambda: len(remote.received) == 50, timeout=20)
        await daemon.wait_for_log("recovered")
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    assert refused >= 30, f"only {refused} failed attempts: the outage did not exercise the throttle"
    entries = daemon.json_logs()
    failing = [e for e in entries if "delivery failing" in e["msg"]]
    assert 1 <= len(failing) <= 3, [e["msg"] for e in failing]
    assert all(e["level"] == "warning" for e in failing)
    recovered = [e for e in entries if "recovered" in e["msg"]]
    assert len(recovered) == 1
    assert recovered[0]["level"] == "info"
    # The recovery line says how many failure lines were folded away: every failure but the printed ones.
    folded = refused - len(failing)
    assert f"({folded} failure lines folded)" in recovered[0]["msg"], (refused, recovered[0]["msg"])
    assert len(entries) <= 8, [e["msg"] for e in entries]


async def test_no_record_body_or_api_key_appears_in_the_log_even_at_debug_level(
    tmp_path: Path, remote: FakeRemote
) -> None:
    first_tries = iter(range(2))  # record 0's first two attempts fail, whichever requests came before them

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        n = orjson.loads(body)["n"]
        if n == 0 and next(first_tries, None) is not None:
            return web.json_response({"error": "unavailable"}, status=503)
        if n == 1:
            return web.json_response({"error": "invalid log"}, status=400)
        return None

    remote.behaviour = behave
    daemon = Daemon.from_config(write_config(tmp_path, kw_sink(remote.url, tmp_path / "kw.key")))
    daemon.args = ("--log-level", "debug")
    await daemon.start()
    try:
        await exercise(daemon, remote, sink="kw", path="/api/request-logs/create/")
        async with aiohttp.ClientSession() as session:  # a drop-in call with no key: the sink's own is used
            body = {"n": 9, "text": MARKER}
            async with session.post(f"http://{daemon.http}/api/request-logs/create/", json=body) as response:
                assert response.status == 200
        await wait_for(lambda: len(remote.received) == 6, timeout=10)
        assert {r.headers["Authorization"] for r in remote.received} == {f"Bearer {APP_KEY}", f"Bearer {SINK_KEY}"}
        daemon.sighup()
        await daemon.wait_for_log("configuration reloaded")
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    log = daemon.logs()
    assert "dead-lettered" in log and "delivery failing" in log  # the failures were logged...
    for secret in (MARKER, APP_KEY, SINK_KEY, "SECRET"):
        assert secret not in log  # ...without what the records said or the keys they travel with


async def test_a_remote_that_echoes_the_api_key_in_its_error_does_not_make_shipper_print_it(
    tmp_path: Path, remote: FakeRemote
) -> None:
    # Some APIs quote the credential they were given in a 401/400 answer; that answer lands in the log line, the
    # dead-letter table and `status`. The key must not come out with it.
    remote.behaviour = Script(503, 401)
    daemon = Daemon.from_config(write_config(tmp_path, kw_sink(remote.url, tmp_path / "kw.key")))
    await daemon.start()
    outputs: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {APP_KEY}"}
            url = f"http://{daemon.http}/api/request-logs/create/"
            async with session.post(url, json={"n": 0}, headers=headers) as response:
                assert response.status == 200
            await wait_for(lambda: remote.attempts == 2, timeout=10)
            # The 401 answer (quoting the key) is a refusal: the row is dead-lettered.
            await wait_for(lambda: "dead-lettered" in daemon.logs(), timeout=10)
            async with session.get(f"http://{daemon.http}/v1/status") as response:
                outputs.append(await response.text())
        for args in (("status", "--json"), ("dlq", "list", "--json"), ("dlq", "list"), ("dlq", "show", "1")):
            code, out, err = await run_cli_async(args[0], *args[1:], "--config", str(daemon.config))
            assert code == 0, err
            outputs.append(out + err)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    outputs.append(daemon.logs())
    leaks: list[Any] = [text[:300] for text in outputs if APP_KEY in text]
    assert leaks == [], f"the app's key is printed in {len(leaks)} of {len(outputs)} outputs"
