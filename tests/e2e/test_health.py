"""`/healthz` (the process serves) and `/readyz` (the spool takes a write, sinks run; 503 once shutdown begins), as a
load balancer or kubelet sees them: a fresh connection per probe, on both listeners, across a graceful stop whose
drain a slow remote holds open."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support import Daemon, FakeRemote, post_items, wait_for, write_config

pytestmark = pytest.mark.supervised


def sink(url: str) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{url}"
retry_initial_backoff = 0.02
retry_max_backoff = 0.1
"""


async def probe(url: str, unix: Path | None = None) -> tuple[int, dict[str, object]] | None:
    """One probe on a new connection; None when nothing answers (refused, reset)."""
    connector = aiohttp.UnixConnector(path=str(unix)) if unix else aiohttp.TCPConnector(force_close=True)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as response,
        ):
            return response.status, orjson.loads(await response.read())
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def test_healthz_and_readyz_answer_200_on_both_listeners_when_ready(tmp_path: Path, remote: FakeRemote) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote.url)))
    await daemon.start()
    try:
        for base, unix in ((f"http://{daemon.http}", None), ("http://localhost", daemon.unix)):
            assert await probe(f"{base}/healthz", unix) == (200, {"status": "ok"})
            assert await probe(f"{base}/readyz", unix) == (200, {"status": "ready", "sinks": ["remote"]})
    finally:
        await daemon.ensure_stopped()


async def test_readyz_turns_503_during_a_graceful_stop_while_healthz_stays_200_until_exit(
    tmp_path: Path, remote: FakeRemote
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, body: bytes) -> web.Response | None:
        await release.wait()
        return None

    remote.async_behaviour = slow
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote.url), drain_timeout=8))
    await daemon.start()
    readyz: list[int | None] = []
    healthz: list[int | None] = []
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
        await wait_for(lambda: remote.in_flight == 1, timeout=10)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        # The drain is held open by the remote for up to 3 s: probe all the while, as a load balancer would.
        until = time.monotonic() + 3
        while time.monotonic() < until and daemon.proc.returncode is None:
            for url, seen in ((f"http://{daemon.http}/readyz", readyz), (f"http://{daemon.http}/healthz", healthz)):
                answer = await probe(url)
                seen.append(None if answer is None else answer[0])
            await asyncio.sleep(0.05)
        assert daemon.proc.returncode is None, "the daemon should still be draining the held send"
        release.set()
        assert await daemon.terminate() == 0
    finally:
        release.set()
        await daemon.ensure_stopped()
    assert len(remote.received) == 1
    # While draining, the daemon says "not ready" (so traffic moves elsewhere) but "alive" (so nobody kills it).
    assert 503 in readyz, f"readyz answers while stopping: {readyz[:10]}"
    assert set(healthz) == {200}, f"healthz answers while stopping: {healthz[:10]}"
