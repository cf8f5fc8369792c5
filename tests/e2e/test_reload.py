"""SIGHUP reload of a running daemon: a changed sink is swapped with nothing lost or sent twice while records stream,
an added sink takes records, a removed one is refused at ingest while its rows wait in the spool, a bad new config
is refused with a log line and the old one keeps serving, and the counters and vendor routes live through it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from shipper.spool.reader import SpoolReader, read
from tests.support import (
    Daemon,
    FakeRemote,
    by_label,
    metric,
    post_items,
    run_cli_async,
    unix_session,
    wait_for,
    wait_for_metrics,
    write_config,
)

pytestmark = pytest.mark.supervised


def http_sink(name: str, url: str, *, concurrency: int = 4, extra: str = "") -> str:
    return f"""
[sinks.{name}]
type = "http"
base_url = "{url}"
concurrency = {concurrency}
retry_initial_backoff = 0.02
retry_max_backoff = 0.1
timeout = 10
{extra}
"""


def rewrite(daemon: Daemon, tmp_path: Path, sinks: str, *, spool_extra: str = "", daemon_extra: str = "") -> None:
    """Write a new config to the daemon's file, keeping its listeners (an [ingest] change needs a restart)."""
    port = int(daemon.http.rsplit(":", 1)[1])
    written = write_config(tmp_path, sinks, spool_extra, http_port=port, daemon_extra=daemon_extra)
    assert written == daemon.config


async def reload(daemon: Daemon, count: int = 1) -> None:
    """SIGHUP, then wait for the `count`-th "configuration reloaded" line."""
    daemon.sighup()
    await daemon.wait_for_log("configuration reloaded", count=count, timeout=30)


@pytest.fixture
async def second() -> Any:
    server = FakeRemote()
    await server.start()
    yield server
    await server.stop()


def numbers(remote: FakeRemote) -> list[int]:
    return [body["n"] for body in remote.bodies()]


class Stream:
    """Clients that keep posting small NDJSON batches (TCP and Unix) until told to stop; remembers what was
    acknowledged, and which of it was sent only after the reload had completed."""

    def __init__(self, daemon: Daemon, sink: str) -> None:
        self.daemon = daemon
        self.sink = sink
        self.counter = itertools.count()
        self.acked: list[int] = []
        self.acked_after_reload: list[int] = []
        self.reloaded = False
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def _run(self, session: aiohttp.ClientSession, url: str) -> None:
        while not self.stop.is_set():
            after = self.reloaded
            batch = [next(self.counter) for _ in range(5)]
            items = [{"sink": self.sink, "path": "/in", "body": {"n": n}} for n in batch]
            try:
                await post_items(session, url, items)
            except (AssertionError, aiohttp.ClientError) as exc:
                self.failures.append(repr(exc))
                return
            self.acked += batch
            if after:
                self.acked_after_reload += batch

    async def run(self) -> None:
        async with aiohttp.ClientSession() as tcp, unix_session(self.daemon.unix) as local:
            await asyncio.gather(
                self._run(tcp, f"http://{self.daemon.http}/v1/records"),
                self._run(local, "http://localhost/v1/records"),
            )


async def test_sighup_moving_a_sink_to_another_remote_mid_stream_delivers_every_acknowledged_record_once(
    tmp_path: Path, remote: FakeRemote, second: FakeRemote
) -> None:
    async def slow(request: web.Request, body: bytes) -> None:
        await asyncio.sleep(0.02)  # sends are in flight at any moment, the moment of the reload included

    remote.async_behaviour = slow
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url, concurrency=4)))
    await daemon.start()
    stream = Stream(daemon, "remote")
    try:
        streaming = asyncio.create_task(stream.run())
        await wait_for(lambda: len(stream.acked) >= 300 and remote.in_flight > 0, timeout=30)

        rewrite(daemon, tmp_path, http_sink("remote", second.url, concurrency=8))
        await reload(daemon)
        stream.reloaded = True
        await wait_for(lambda: len(stream.acked_after_reload) >= 300, timeout=30)
        stream.stop.set()
        await streaming
        assert stream.failures == []

        acked = Counter(stream.acked)
        await wait_for(lambda: len(remote.received) + len(second.received) >= len(acked), timeout=60)
        async with aiohttp.ClientSession() as session:
            samples = await wait_for_metrics(
                session, f"http://{daemon.http}", lambda s: metric(s, "shipper_spool_queued", sink="remote") == 0
            )
        # The new limit is in force: above the old 4, at most the new 8 (adaptive concurrency may sit below it).
        assert 4 < (metric(samples, "shipper_sink_concurrency_limit", sink="remote") or 0) <= 8
        delivered = Counter(numbers(remote)) + Counter(numbers(second))
        assert delivered == acked  # nothing lost, nothing twice
        assert set(stream.acked_after_reload) <= set(numbers(second))  # after the reload: the new remote only
        assert not set(stream.acked_after_reload) & set(numbers(remote))
        assert numbers(second), "the new remote got nothing"
        assert await daemon.terminate() == 0
    finally:
        stream.stop.set()
        await daemon.ensure_stopped()
    assert '"redelivered":0' in daemon.logs().replace(" ", "")


async def test_counters_of_a_sink_changed_by_reload_keep_counting_up(
    tmp_path: Path, remote: FakeRemote, second: FakeRemote
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url)))
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{base}/v1/records", [{"sink": "remote", "body": {"n": n}} for n in range(5)])
            await wait_for_metrics(
                session, base, lambda s: metric(s, "shipper_records_delivered_total", sink="remote") == 5
            )
            rewrite(daemon, tmp_path, http_sink("remote", second.url))
            await reload(daemon)
            await post_items(session, f"{base}/v1/records", [{"sink": "remote", "body": {"n": n}} for n in range(5, 8)])
            await wait_for(lambda: len(second.received) == 3, timeout=10)
            # Prometheus counters only go up within a process: 5 before the reload and 3 after make 8. The remote
            # holds the 3 before their answers are counted: wait for the count itself (a reset would stop it at 3).
            samples = await wait_for_metrics(
                session,
                base,
                lambda s: (metric(s, "shipper_records_delivered_total", sink="remote") or 0) >= 8,
            )
            assert metric(samples, "shipper_records_delivered_total", sink="remote") == 8
            assert metric(samples, "shipper_records_received_total", sink="remote") == 8
            assert metric(samples, "shipper_send_duration_seconds_count", sink="remote") == 8
    finally:
        await daemon.ensure_stopped()


async def test_a_sink_added_by_reload_accepts_records_and_delivers_them(
    tmp_path: Path, remote: FakeRemote, second: FakeRemote
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url)))
    await daemon.start()
    try:
        url = f"http://{daemon.http}/v1/records"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"sink": "extra", "body": {"n": 0}}) as response:
                assert response.status == 422
                assert (await response.json())["error"] == "unknown_sink"
            rewrite(daemon, tmp_path, http_sink("remote", remote.url) + http_sink("extra", second.url))
            await reload(daemon)
            await post_items(session, url, [{"sink": "extra", "body": {"n": n}} for n in range(1, 4)])
            await post_items(session, url, [{"sink": "remote", "body": {"n": 10}}])
            await wait_for(lambda: sorted(numbers(second)) == [1, 2, 3] and numbers(remote) == [10], timeout=10)
            async with session.get(f"http://{daemon.http}/readyz") as response:
                assert sorted((await response.json())["sinks"]) == ["extra", "remote"]
    finally:
        await daemon.ensure_stopped()


async def test_a_sink_removed_by_reload_is_refused_at_ingest_while_its_queued_rows_stay_in_the_spool(
    tmp_path: Path, remote: FakeRemote, second: FakeRemote
) -> None:
    down = True

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        return web.json_response({}, status=503, headers={"Retry-After": "1"}) if down else None

    second.behaviour = behave
    both = http_sink("keep", remote.url) + http_sink("gone", second.url)
    daemon = Daemon.from_config(write_config(tmp_path, both))
    spool = tmp_path / "spool.db"
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{base}/v1/records", [{"sink": "gone", "body": {"n": n}} for n in range(5)])
            await wait_for(lambda: second.attempts >= 1, timeout=10)

            rewrite(daemon, tmp_path, http_sink("keep", remote.url))
            await reload(daemon)
            async with session.post(f"{base}/v1/records", json={"sink": "gone", "body": {"n": 99}}) as response:
                assert response.status == 422
                answer = await response.json()
                assert (answer["error"], answer["field"]) == ("unknown_sink", "sink")
            await post_items(session, f"{base}/v1/records", [{"sink": "keep", "body": {"n": 100}}])
            await wait_for(lambda: numbers(remote) == [100], timeout=10)

            # The removed sink's rows wait in the spool, visible to the operator.
            assert read(spool, lambda s: s.waiting("gone")) == 5
            code, out, err = await run_cli_async("status", "--config", str(daemon.config), "--json")
            assert code == 0, err
            gone = next(s for s in orjson.loads(out)["sinks"] if s["sink"] == "gone")
            assert gone["queued"] == 5
            assert "state" not in gone  # no forwarder runs for it
            samples = await wait_for_metrics(
                session, base, lambda s: metric(s, "shipper_spool_queued", sink="gone") == 5, timeout=15
            )
            assert "gone" not in by_label(samples, "shipper_sink_in_flight", "sink")

            # Put back (the remote recovered meanwhile): its rows flow again.
            down = False
            attempts = second.attempts
            rewrite(daemon, tmp_path, both)
            await reload(daemon, count=2)
            await wait_for(lambda: sorted(numbers(second)) == [0, 1, 2, 3, 4], timeout=15)
            assert second.attempts - attempts == 5
    finally:
        await daemon.ensure_stopped()


BAD_RELOADS = [
    # Each makes (sinks, extra [spool] lines); each would also move the sink to the second remote.
    pytest.param(lambda url: ("[sinks.remote\n" + http_sink("remote", url), ""), "not valid TOML", id="invalid-toml"),
    pytest.param(lambda url: (http_sink("remote", url, concurrency=0), ""), "concurrency", id="bad-value"),
    pytest.param(
        lambda url: (http_sink("remote", url, extra='auth_env = "SHIPPER_TEST_SURELY_UNSET_RELOAD_TOKEN"'), ""),
        "auth_env",
        id="unset-secret",
    ),
    pytest.param(lambda url: (http_sink("remote", url), 'durability = "os"'), "[spool]", id="spool-change"),
    # Valid, but a new sink cannot start (its file cannot be created): nothing of the new config is applied.
    pytest.param(
        lambda url: (http_sink("remote", url) + '\n[sinks.out]\ntype = "file"\npath = "/dev/null/out.ndjson"\n', ""),
        "sinks.out: cannot start",
        id="sink-cannot-start",
    ),
]


@pytest.mark.parametrize(("bad", "named"), BAD_RELOADS)
async def test_a_bad_config_on_sighup_is_refused_with_a_log_line_and_the_old_one_keeps_serving(
    tmp_path: Path, remote: FakeRemote, second: FakeRemote, bad: Any, named: str
) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url)))
    await daemon.start()
    try:
        # The bad file would also move the sink to `second`: refused, so records keep going to `remote`.
        sinks, spool_extra = bad(second.url)
        rewrite(daemon, tmp_path, sinks, spool_extra=spool_extra)
        daemon.sighup()
        await daemon.wait_for_log("reload refused", timeout=30)
        (line,) = [entry for entry in daemon.json_logs() if "reload refused" in entry["msg"]]
        assert line["level"] == "error"
        assert named in line["msg"]
        assert daemon.proc is not None and daemon.proc.returncode is None

        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
            await wait_for(lambda: numbers(remote) == [1], timeout=10)
            assert second.attempts == 0

            # A good config afterwards is taken as usual.
            rewrite(daemon, tmp_path, http_sink("remote", second.url))
            await reload(daemon)
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 2}}])
            await wait_for(lambda: numbers(second) == [2], timeout=10)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()


KW_KEY = "kw-app-key-SECRET-41f0"


def kw_sink(url: str, concurrency: int) -> str:
    return f"""
[sinks.kw]
type = "keywordsai"
base_url = "{url}"
concurrency = {concurrency}
retry_initial_backoff = 0.02
retry_max_backoff = 0.1
"""


@contextlib.asynccontextmanager
async def vendor_sink_mid_reload(tmp_path: Path, remote: FakeRemote) -> AsyncIterator[tuple[Daemon, str]]:
    """A keywordsai sink whose first send the remote holds; a SIGHUP changes the sink, so the reload waits for that
    send to finish before replacing it. Yields inside that window; on leaving, lets the send go and waits for the
    reload to complete."""
    release = asyncio.Event()

    async def hold_first(request: web.Request, body: bytes) -> None:
        if orjson.loads(body).get("n") == 0:
            await release.wait()

    remote.async_behaviour = hold_first
    daemon = Daemon.from_config(write_config(tmp_path, kw_sink(remote.url, 4)))
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {KW_KEY}"}
            async with session.post(f"{base}/api/request-logs/create/", json={"n": 0}, headers=headers) as response:
                assert response.status == 200
            await wait_for(lambda: remote.in_flight == 1, timeout=10)
            rewrite(daemon, tmp_path, kw_sink(remote.url, 8))
            daemon.sighup()
            # The replacement runs (limit 8) while the old sink still holds its send: the window is open.
            await wait_for_metrics(session, base, lambda s: metric(s, "shipper_sink_concurrency_limit", sink="kw") == 8)
            assert remote.in_flight == 1
        yield daemon, base
        release.set()
        await daemon.wait_for_log("configuration reloaded")
    finally:
        release.set()
        await daemon.ensure_stopped()


async def test_drop_in_vendor_calls_are_still_answered_while_a_changed_vendor_sink_drains_during_reload(
    tmp_path: Path, remote: FakeRemote
) -> None:
    async with vendor_sink_mid_reload(tmp_path, remote) as (_, base), aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {KW_KEY}"}
        async with session.post(f"{base}/api/request-logs/create/", json={"n": 1}, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == {"message": "log successful"}
    await wait_for(lambda: sorted(numbers(remote)) == [0, 1], timeout=10)
    assert {r.headers["Authorization"] for r in remote.received} == {f"Bearer {KW_KEY}"}


async def test_native_records_for_a_vendor_sink_keep_the_vendor_mapping_while_it_drains_during_reload(
    tmp_path: Path, remote: FakeRemote
) -> None:
    async with vendor_sink_mid_reload(tmp_path, remote) as (_, base), aiohttp.ClientSession() as session:
        native = {"sink": "kw", "path": "/request-logs/create", "body": {"n": 2}}
        headers = {"Authorization": f"Bearer {KW_KEY}"}
        async with session.post(f"{base}/v1/records", json=native, headers=headers) as response:
            assert response.status == 202, await response.text()
            answer = await response.json()
    # The row has left the queue one way or the other (delivered or dead-lettered).
    await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.waiting) == 0, timeout=10)
    dead = [d.reason for d in read(tmp_path / "spool.db", SpoolReader.dead_letters)]
    # What the vendor sink always does: the SDK's answer, the documented path, and the app's key forwarded.
    assert answer.get("results") == [{"message": "log successful"}]
    assert dead == []
    (row,) = [r for r in remote.received if r.json().get("n") == 2]
    assert row.path == "/api/request-logs/create/"
    assert row.headers["Authorization"] == f"Bearer {KW_KEY}"


async def test_reload_to_log_level_warning_silences_info_lines_but_not_warnings(
    tmp_path: Path, remote: FakeRemote
) -> None:
    def refuse_poison(request: web.Request, body: bytes) -> web.Response | None:
        return web.json_response({"error": "no"}, status=400) if b"poison" in body else None

    remote.behaviour = refuse_poison
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url)))
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        rewrite(daemon, tmp_path, http_sink("remote", remote.url, concurrency=6), daemon_extra='log_level = "warning"')
        lines_before = len(daemon.log_lines())
        daemon.sighup()
        async with aiohttp.ClientSession() as session:
            await wait_for_metrics(
                session, base, lambda s: metric(s, "shipper_sink_concurrency_limit", sink="remote") == 6
            )
            await post_items(session, f"{base}/v1/records", [{"sink": "remote", "body": {"poison": True}}])
        await daemon.wait_for_log("dead-lettered")
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    after = daemon.json_logs()[lines_before:]
    assert [e["level"] for e in after] == ["warning"], after  # the dead letter; no info line (reloaded, stopped)


async def test_reload_to_log_level_debug_adds_debug_lines(tmp_path: Path, remote: FakeRemote) -> None:
    failures = iter([503])

    def behave(request: web.Request, body: bytes) -> web.Response | None:
        return web.json_response({}, status=503) if next(failures, None) else None

    remote.behaviour = behave
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url)))
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{base}/v1/records", [{"sink": "remote", "body": {"n": 0}}])
            await wait_for(lambda: len(remote.received) == 1, timeout=10)
            assert not [e for e in daemon.json_logs() if e["level"] == "debug"]

            rewrite(daemon, tmp_path, http_sink("remote", remote.url), daemon_extra='log_level = "debug"')
            await reload(daemon)
            failures = iter([503])
            await post_items(session, f"{base}/v1/records", [{"sink": "remote", "body": {"n": n}} for n in (1, 2)])
            await wait_for(lambda: len(remote.received) == 3, timeout=10)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    debug = [e for e in daemon.json_logs() if e["level"] == "debug"]
    assert debug, "log_level = debug after the reload, yet not one debug line while records were sent and retried"


async def test_the_log_level_flag_outlives_a_reload_of_an_unchanged_log_level(
    tmp_path: Path, remote: FakeRemote
) -> None:
    # `--log-level` overrides daemon.log_level; a SIGHUP that changes only a sink must not undo that.
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url)))
    daemon.args = ("--log-level", "warning")
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        rewrite(daemon, tmp_path, http_sink("remote", remote.url, concurrency=6))
        daemon.sighup()
        async with aiohttp.ClientSession() as session:
            await wait_for_metrics(
                session, base, lambda s: metric(s, "shipper_sink_concurrency_limit", sink="remote") == 6
            )
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    assert [e for e in daemon.json_logs() if e["level"] == "info"] == []


async def test_sigterm_while_a_reload_waits_for_a_send_still_drains_it_and_nothing_is_sent_twice(
    tmp_path: Path, remote: FakeRemote
) -> None:
    release = asyncio.Event()

    async def hold_first(request: web.Request, body: bytes) -> None:
        if orjson.loads(body).get("n") == 0:
            await release.wait()

    remote.async_behaviour = hold_first
    daemon = Daemon.from_config(write_config(tmp_path, http_sink("remote", remote.url), drain_timeout=10))
    await daemon.start()
    try:
        base = f"http://{daemon.http}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{base}/v1/records", [{"sink": "remote", "body": {"n": 0}}])
            await wait_for(lambda: remote.in_flight == 1, timeout=10)
            rewrite(daemon, tmp_path, http_sink("remote", remote.url, concurrency=6))
            daemon.sighup()
            # The reload is waiting for the held send: its replacement (limit 6) already runs.
            await wait_for_metrics(
                session, base, lambda s: metric(s, "shipper_sink_concurrency_limit", sink="remote") == 6
            )
            assert remote.in_flight == 1
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # the remote answers half a second into the drain, well within drain_timeout
        release.set()
        assert await daemon.terminate(timeout=20) == 0
        assert numbers(remote) == [0]
        # The answer was recorded before the spool closed: nothing is left to send again.
        assert read(tmp_path / "spool.db", SpoolReader.waiting) == 0
        errors = [e for e in daemon.json_logs() if e["level"] in ("error", "critical") or "exc" in e]
        assert errors == []
        await daemon.start()
        await asyncio.sleep(1.5)  # a restart: give the forwarder a chance to (wrongly) send it again
        assert numbers(remote) == [0]
        assert await daemon.terminate() == 0
    finally:
        release.set()
        await daemon.ensure_stopped()
