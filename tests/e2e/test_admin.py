"""The `[admin] http` listener of a real daemon subprocess: the four operations routes and nothing else, its token
(off loopback required, probes exempt), a busy port as one `shipper:` line; and the operations metrics every scrape
carries: process and build info, ingest duration by bounded route label and status, and the acknowledgement
latency."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.fakes import KeywordsAIFake
from tests.hardening import Gate
from tests.support import (
    Daemon,
    FakeRemote,
    by_label,
    free_port,
    metric,
    post_items,
    run_cli_async,
    scrape,
    wait_for,
    wait_for_metrics,
    write_config,
)

pytestmark = pytest.mark.supervised


def sink(url: str) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{url}"
"""


def admin(address: str, token: str | None = None) -> str:
    return f'[admin]\nhttp = "{address}"\n' + (f'token = "{token}"\n' if token else "")


async def started(daemon: Daemon) -> dict[str, object]:
    """The start line: logged once every listener, the admin one included, accepts."""
    await daemon.start()
    await daemon.wait_for_log('"shipper started"')
    return next(line for line in daemon.json_logs() if line["msg"] == "shipper started")


async def get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict[str, object]]:
    async with session.get(url, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def test_admin_listener_serves_the_operations_routes_of_the_same_daemon_and_takes_no_records(
    tmp_path: Path, remote: FakeRemote
) -> None:
    address = f"127.0.0.1:{free_port()}"
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote.url), extra=admin(address)))
    start_line = await started(daemon)
    try:
        assert start_line["admin"] == [f"http://{address}"]
        base = f"http://{address}"
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
            assert await get(session, f"{base}/healthz") == (200, {"status": "ok"})
            assert await get(session, f"{base}/readyz") == (200, {"status": "ready", "sinks": ["remote"]})
            status, body = await get(session, f"{base}/v1/status")
            assert status == 200 and set(body["sinks"]) == {"remote"}  # type: ignore[call-overload]
            # The same registry as ingest's: what ingest committed shows on the admin scrape.
            samples = await wait_for_metrics(
                session, base, lambda s: metric(s, "shipper_records_delivered_total", sink="remote") == 1
            )
            assert metric(samples, "shipper_records_received_total", sink="remote") == 1
            assert metric(samples, "shipper_build_info", version="0.1.0") == 1
            assert (metric(samples, "process_resident_memory_bytes") or 0) > 0
            assert (metric(samples, "process_open_fds") or 0) > 0
            assert any(name == "python_info" for name, _ in samples)

            async with session.post(f"{base}/v1/records", data=b'{"sink": "remote", "body": {}}') as response:
                assert response.status == 404
                assert (await response.json())["error"] == "not_found"
            async with session.post(f"{base}/metrics") as response:
                assert response.status == 405
                assert response.headers["Allow"] == "GET, HEAD"
                assert (await response.json())["error"] == "method_not_allowed"
        assert await daemon.terminate() == 0
        assert len(remote.received) == 1  # nothing came in through the admin listener
    finally:
        await daemon.ensure_stopped()


async def test_admin_listener_is_off_unless_configured(tmp_path: Path, remote: FakeRemote) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote.url)))
    start_line = await started(daemon)
    try:
        assert start_line["admin"] == []
    finally:
        await daemon.ensure_stopped()


async def test_admin_token_guards_metrics_and_status_while_the_probes_stay_open(
    tmp_path: Path, remote: FakeRemote
) -> None:
    address = f"127.0.0.1:{free_port()}"
    secret = "admin-secret-4f1c9e"
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote.url), extra=admin(address, secret)))
    await started(daemon)
    try:
        base = f"http://{address}"
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/v1/status"):
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Shipper-Token": "wrong"}):
                    async with session.get(f"{base}{path}", headers=headers) as response:
                        assert response.status == 401, path
                        assert (await response.json())["error"] == "invalid_token"
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
            text, _ = await scrape_with(session, base, {"Authorization": f"Bearer {secret}"})
            assert secret not in text
            status, _ = await get(session, f"{base}/v1/status", **{"X-Shipper-Token": secret})
            assert status == 200
            assert (await get(session, f"{base}/healthz"))[0] == 200
            assert (await get(session, f"{base}/readyz"))[0] == 200
    finally:
        await daemon.ensure_stopped()


async def scrape_with(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> tuple[str, int]:
    async with session.get(f"{base}/metrics", headers=headers) as response:
        assert response.status == 200
        return await response.text(), response.status


async def test_admin_off_loopback_without_a_token_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, sink("http://127.0.0.1:9"), extra=admin("0.0.0.0:9901"))
    code, _, err = await run_cli_async("check-config", "--config", str(config))
    assert code == 2
    assert "admin" in err and "[admin] token" in err, err


async def test_admin_port_in_use_is_one_shipper_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        config = write_config(tmp_path, sink("http://127.0.0.1:9"), extra=admin(address))
        code, _, err = await run_cli_async("run", "--config", str(config))
    assert code == 2
    assert err.splitlines()[-1].startswith(f"shipper: admin.http: cannot listen on {address}: "), err
    assert "Traceback" not in err


async def test_ingest_durations_are_labelled_by_route_template_or_vendor_and_acks_by_commit(
    tmp_path: Path, remote: FakeRemote, kw_fake: KeywordsAIFake
) -> None:
    sinks = sink(remote.url) + f'\n[sinks.kw]\ntype = "keywordsai"\nbase_url = "{kw_fake.url}"\n'
    daemon = Daemon.from_config(write_config(tmp_path, sinks))
    await daemon.start()
    try:
        tcp = f"http://{daemon.http}"
        key = {"Authorization": "Bearer kw-test-key-123"}
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"{tcp}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
            await post_items(session, f"{tcp}/v1/records", [{"sink": "remote", "body": {"n": 2}}])
            create = {"model": "gpt-4o-mini", "prompt_messages": [], "completion_message": {"role": "assistant"}}
            async with session.post(f"{tcp}/api/request-logs/create/", json=create, headers=key) as response:
                assert response.status == 200, await response.text()
            async with session.get(f"{tcp}/api/request-logs/list?page=1", headers=key) as response:
                assert response.status == 200, await response.text()  # proxied: nothing committed
            for path in ("/no/such/route", "/no/such/route/42?x=1"):
                async with session.get(f"{tcp}{path}") as response:
                    assert response.status == 404
            text, samples = await scrape(session, tcp)

        counts = {
            dict(labels)["route"] + " " + dict(labels)["status"]: value
            for (name, labels), value in samples.items()
            if name == "shipper_ingest_request_duration_seconds_count"
        }
        assert counts.pop("/healthz 200") >= 1  # the start-up probes of Daemon.start
        assert counts == {"/v1/records 202": 2, "dropin:keywordsai 200": 2, "other 404": 2}
        assert "/no/such" not in text  # a client's paths never become series
        # Two native requests and one spooled drop-in call were committed; the proxied read was not.
        assert metric(samples, "shipper_ingest_ack_latency_seconds_count") == 3
        ack_sum = metric(samples, "shipper_ingest_ack_latency_seconds_sum") or 0.0
        total = sum(by_label(samples, "shipper_ingest_request_duration_seconds_sum", "route").values())
        assert 0 < ack_sum < total
    finally:
        await daemon.ensure_stopped()


async def test_admin_readyz_turns_503_during_the_drain_and_the_listener_closes_with_ingest(
    tmp_path: Path, remote: FakeRemote
) -> None:
    gate = Gate()  # holds the send, so the drain lasts until the test opens it
    remote.async_behaviour = gate
    address = f"127.0.0.1:{free_port()}"
    daemon = Daemon.from_config(write_config(tmp_path, sink(remote.url), extra=admin(address), drain_timeout=8))
    await started(daemon)
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"n": 1}}])
            await wait_for(lambda: remote.in_flight == 1, timeout=10)
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGTERM)
            await daemon.wait_for_log("shutting down")
            # The supervisor says so before its SIGTERM reaches the ingest process, which holds the admin listener:
            # the turn to 503 is awaited. The held send keeps the drain going meanwhile, so the listener still answers.
            for _ in range(500):
                answer = await get(session, f"http://{address}/readyz")
                if answer[0] == 503:
                    break
                await asyncio.sleep(0.02)
            assert answer == (503, {"error": "stopping", "message": "shipper is shutting down"})
            assert (await get(session, f"http://{address}/healthz"))[0] == 200
        gate.open()
        assert await daemon.terminate() == 0
    finally:
        gate.open()
        await daemon.ensure_stopped()
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with ingest, not left behind
        async with aiohttp.ClientSession() as session:
            await get(session, f"http://{address}/healthz")


async def test_a_reload_that_changes_admin_is_refused_and_the_listener_keeps_its_address(
    tmp_path: Path, remote: FakeRemote
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, sink(remote.url), extra=admin(address))
    daemon = Daemon.from_config(config)
    await started(daemon)
    try:
        config.write_text(config.read_text().replace(address, f"127.0.0.1:{free_port()}"))
        daemon.sighup()
        await daemon.wait_for_log("reload refused")
        refused = next(line for line in daemon.json_logs() if "reload refused" in line["msg"])
        assert "[admin]" in str(refused["msg"]) and "restart" in str(refused["msg"])
        async with aiohttp.ClientSession() as session:
            assert (await get(session, f"http://{address}/healthz"))[0] == 200
    finally:
        await daemon.ensure_stopped()
