"""`shipper status` with the daemon's live view merged in: state, in flight, delivery rate, retrying since and last
error during an outage, beside the spool's totals; the spool totals alone once the daemon is stopped, saying so;
every sink the daemon runs even when status is given another config; sinks the daemon no longer runs, named as
such; and `--watch`, which redraws in place."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support import Daemon, FakeRemote, post_items, run_cli_async, wait_for, write_config

pytestmark = pytest.mark.supervised

CLEAR = "\x1b[H\x1b[2J"


def sink(url: str) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{url}"
retry_initial_backoff = 0.02
retry_max_backoff = 0.1
"""


async def status_json(config: Path) -> dict[str, Any]:
    code, out, err = await run_cli_async("status", "--config", str(config), "--json")
    assert code == 0, err
    data: dict[str, Any] = orjson.loads(out)
    return data


async def live(session: aiohttp.ClientSession, daemon: Daemon) -> dict[str, Any]:
    async with session.get(f"http://{daemon.http}/v1/status") as response:
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data["sinks"]["remote"]


async def test_status_json_shows_the_live_view_during_an_outage_and_spool_totals_only_once_stopped(
    tmp_path: Path, remote: FakeRemote
) -> None:
    down = False

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        if down:
            return web.json_response({"error": "maintenance"}, status=503, headers={"Retry-After": "3600"})
        return None

    remote.behaviour = behave
    config = write_config(tmp_path, sink(remote.url))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://{daemon.http}/v1/records"
            await post_items(session, url, [{"sink": "remote", "body": {"n": n}} for n in range(10)])
            await wait_for(lambda: len(remote.received) == 10, timeout=20)
            # The rate needs two samples of the spool monitor (one every 5 s).
            for _ in range(300):
                if ((await live(session, daemon))["delivered_per_minute"] or 0) > 0:
                    break
                await asyncio.sleep(0.05)
            data = await status_json(config)
            (entry,) = data["sinks"]
            assert entry["state"] == "up"
            assert entry["delivered_per_minute"] > 0
            assert entry["retrying_since"] is None
            assert entry["last_error"] is None

            down = True
            outage_began = time.time()
            await post_items(session, url, [{"sink": "remote", "body": {"n": n}} for n in range(10, 13)])
            await wait_for(lambda: remote.attempts > 10, timeout=10)
            for _ in range(200):
                if (await live(session, daemon))["last_error"]:
                    break
                await asyncio.sleep(0.05)

            data = await status_json(config)
            assert data["daemon"] == {"running": True, "pid": daemon.proc.pid if daemon.proc else None}
            assert data["spool"]["path"] == str(tmp_path / "spool.db")
            assert data["spool"]["bytes"] > 0
            (entry,) = data["sinks"]
            assert entry["sink"] == "remote"
            assert entry["state"] == "backing_off"
            assert entry["in_flight"] == 0
            assert entry["concurrency_limit"] == 1
            assert outage_began - 1 <= entry["retrying_since"] <= time.time()
            assert "503" in entry["last_error"]
            assert "maintenance" in entry["last_error"]
            assert isinstance(entry["delivered_per_minute"], float | int)
            assert entry["delivered_since_start"] == 10
            # The spool's own totals sit beside the live view.
            assert entry["queued"] == 3
            assert entry["dead_lettered"] == 0
            assert entry["retrying"] >= 1
            assert entry["oldest_age"] is not None and entry["oldest_age"] >= 0
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()

    data = await status_json(config)
    assert data["daemon"] == {"running": False, "pid": None}
    (why,) = data["partial"]
    assert why.startswith(f"no daemon answered at {daemon.unix} or {daemon.http}: spool figures only"), why
    (entry,) = data["sinks"]
    assert {k: entry[k] for k in ("sink", "queued", "dead_lettered")} == {
        "sink": "remote",
        "queued": 3,
        "dead_lettered": 0,
    }
    # Only what the spool knows: no live fields pretending to be current.
    assert set(entry) == {"sink", "queued", "leased", "retrying", "dead_lettered", "oldest_age"}


def elsewhere(tmp_path: Path, daemon: Daemon) -> Path:
    """Another config reaching the same daemon over TCP: its own sinks, socket and spool (none of them real), as a
    `shipper status` run without the daemon's --config would have."""
    (tmp_path / "cli").mkdir()
    port = int(daemon.http.rpartition(":")[2])
    return write_config(tmp_path / "cli", '[sinks.local]\ntype = "file"\npath = "out.ndjson"\n', http_port=port)


async def test_status_with_another_config_shows_every_sink_the_daemon_runs_with_its_spool_figures(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = lambda request, body: web.json_response({"error": "down"}, status=503)
    (tmp_path / "daemon").mkdir()
    config = write_config(tmp_path / "daemon", sink(remote.url) + sink(remote.url).replace("remote", "second"))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}] * 2)
            await wait_for(lambda: remote.attempts >= 1, timeout=10)
            for _ in range(200):
                if (await live(session, daemon))["last_error"]:
                    break
                await asyncio.sleep(0.05)
        other = elsewhere(tmp_path, daemon)
        data = await status_json(other)
        assert [s["sink"] for s in data["sinks"]] == ["remote", "second"]  # the daemon's, not this config's "local"
        assert data["spool"]["path"] == str(tmp_path / "daemon" / "spool.db")
        remote_entry = data["sinks"][0]
        assert (remote_entry["queued"], remote_entry["dead_lettered"]) == (2, 0)
        assert remote_entry["state"] in ("backing_off", "probing", "open")
        assert data["partial"] == []
        code, table, err = await run_cli_async("status", "--config", str(other))
        assert code == 0, err
        assert [line.split()[0] for line in table.splitlines()[1:3]] == ["remote", "second"]
        assert "local" not in table and "partial" not in table
        assert f"spool {tmp_path / 'daemon' / 'spool.db'}:" in table
    finally:
        await daemon.ensure_stopped()


async def test_status_names_a_sink_the_daemon_no_longer_runs_whose_rows_wait_in_the_spool(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = lambda request, body: web.json_response({"error": "down"}, status=503)
    config = write_config(tmp_path, sink(remote.url) + sink(remote.url).replace("remote", "retired"))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "retired", "body": {"n": 1}}])
        await wait_for(lambda: remote.attempts >= 1, timeout=10)
        text = config.read_text()
        config.write_text(text[: text.index("[sinks.retired]")])  # the last table: removed by the reload
        daemon.sighup()
        await daemon.wait_for_log("configuration reloaded")
        data = await status_json(config)
        retired = next(s for s in data["sinks"] if s["sink"] == "retired")
        assert retired["queued"] == 1 and "state" not in retired
        assert data["partial"] == ["not run by the daemon, spool figures only: retired"]
        code, table, err = await run_cli_async("status", "--config", str(config))
        assert code == 0, err
        assert "partial view: not run by the daemon, spool figures only: retired" in table
    finally:
        await daemon.ensure_stopped()


async def test_status_watch_redraws_in_place_until_interrupted(tmp_path: Path, remote: FakeRemote) -> None:
    config = write_config(tmp_path, sink(remote.url))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shipper",
            "status",
            "--config",
            str(elsewhere(tmp_path, daemon)),  # another config: the daemon's sinks are shown all the same
            "--watch",
            "0.5",  # the floor: anything faster is refused
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # A shell runs background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt: the
            # command must see Ctrl-C as a terminal would send it, however this test run was started.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 20
        while out.count(CLEAR.encode()) < 3 and time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(proc.stdout.read(4096), timeout=1)
            except TimeoutError:
                continue
            if not chunk:
                break
            out += chunk
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
        text = (out + rest).decode()
        # Each refresh clears the screen and draws the whole table again.
        assert text.count(CLEAR) >= 3
        frames = [frame for frame in text.split(CLEAR) if frame.strip()]
        assert all(frame.lstrip().startswith("SINK") and "remote" in frame for frame in frames)
        assert all("running (pid" in frame for frame in frames)
    finally:
        await daemon.ensure_stopped()
