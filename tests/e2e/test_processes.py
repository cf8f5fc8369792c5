"""One shipper, several processes: a supervisor, ingest and delivery roles on one spool (supervisor.py).

kill -9 of each kind of process while clients stream keyed records, and while apps stream through a vendor SDK:
nothing acknowledged is lost, every key's records (every entity's create and update) reach the remote in order (a
repeat only ever of the record just sent), and the supervisor starts the dead role again; a delivery process that
hangs (SIGSTOP) gets its leases taken over by the other at their deadline; the supervisor's own kill -9 takes every
role with it; the operations routes answer for all processes at once; roles run alone (no supervisor) share a spool
and refuse a whole shipper beside them; only the delivery process, which counts tokens, loads tiktoken, and the
supervisor loads no aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shipper.core.leasing import SETTLING_ROUNDS
from tests.fakes import KeywordsAIFake
from tests.fakes import snippets as sdk
from tests.fakes.rig import Rig, vendor_rig
from tests.support import Daemon, FakeRemote, metric, run_cli_async, scrape, wait_for, write_config

HL_OPS = ["prompt.create", "prompt.update"]

pytestmark = [pytest.mark.timeout(120), pytest.mark.supervised]


def config_for(tmp_path: Path, remote: FakeRemote, ingest: int = 1, delivery: int = 1, lease: float = 300) -> Path:
    sink = f"""
[sinks.remote]
type = "http"
base_url = "{remote.url}"
concurrency = 8
retry_initial_backoff = 0.02
retry_max_backoff = 0.2
timeout = 10
"""
    return write_config(
        tmp_path,
        sink,
        extra=f"lease_timeout = {lease}",
        daemon_extra=f"ingest_workers = {ingest}\ndelivery_workers = {delivery}",
    )


class KeyedClients:
    """Clients each sending its own keys' records one at a time, so acknowledgement order is number order."""

    def __init__(self, daemon: Daemon, clients: int = 4, keys: int = 3) -> None:
        self.daemon = daemon
        self.acked: dict[str, list[int]] = defaultdict(list)
        self.stop = asyncio.Event()
        self._clients, self._keys = clients, keys

    async def _client(self, client: int) -> None:
        numbers = itertools.count()
        keys = itertools.cycle(f"c{client}-k{k}" for k in range(self._keys))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not self.stop.is_set():
                key, n = next(keys), next(numbers)
                item = {"sink": "remote", "path": "/ingest", "key": key, "body": {"key": key, "n": n}}
                try:
                    async with session.post(f"http://{self.daemon.http}/v1/records", json=item) as response:
                        if response.status == 202:
                            self.acked[key].append(n)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.sleep(0.05)  # the ingest process is being replaced: try the next one

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._client(c)) for c in range(self._clients)]

    def total(self) -> int:
        return sum(len(ns) for ns in self.acked.values())


def by_key(remote: FakeRemote) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for body in remote.bodies():
        found[body["key"]].append(body["n"])
    return found


def all_arrived(clients: KeyedClients, remote: FakeRemote) -> bool:
    arrived = by_key(remote)
    return all(set(acked) <= set(arrived.get(key, [])) for key, acked in clients.acked.items())


def check(clients: KeyedClients, remote: FakeRemote) -> int:
    """Every acknowledged record arrived; per key, never one older than one already there (a repeat of the latest
    is a redelivery). Returns how many copies were repeats."""
    arrived = by_key(remote)
    repeats = 0
    for key, acked in clients.acked.items():
        seen = arrived.get(key, [])
        assert set(acked) <= set(seen), f"{key}: lost {sorted(set(acked) - set(seen))[:10]}"
        assert all(a <= b for a, b in itertools.pairwise(seen)), f"{key} out of order: {seen}"
        repeats += len(seen) - len(set(seen))
    return repeats


async def roles(daemon: Daemon) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{daemon.http}/v1/status") as response:
        return list((await response.json())["roles"])


async def pid_of(daemon: Daemon, role: str, besides: int = 0, timeout: float = 20) -> int:
    """A running process of `role` (other than `besides`), as `/v1/status` lists them; waits for one to run."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                found = [r["pid"] for r in await roles(daemon) if r["role"] == role and r["state"] == "running"]
                if [pid for pid in found if pid != besides]:
                    return int(next(pid for pid in found if pid != besides))
            await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    return True


@pytest.mark.parametrize("role", ["delivery", "ingest"])
async def test_kill_9_of_a_role_loses_nothing_keeps_key_order_and_the_role_comes_back(
    tmp_path: Path, remote: FakeRemote, role: str
) -> None:
    daemon = Daemon.from_config(config_for(tmp_path, remote))
    await daemon.start()
    clients = KeyedClients(daemon)
    try:
        tasks = clients.start()
        await wait_for(lambda: clients.total() > 300 and len(remote.received) > 100, timeout=30)
        victim = await pid_of(daemon, role)
        os.kill(victim, signal.SIGKILL)
        await daemon.wait_for_log(f"the {role} process (pid {victim}) died")
        await pid_of(daemon, role, besides=victim)  # started again
        await wait_for(lambda: clients.total() > 600, timeout=30)  # and serving
        clients.stop.set()
        await asyncio.gather(*tasks)
        await wait_for(lambda: all_arrived(clients, remote), timeout=30)
        repeats = check(clients, remote)
        # Only a send whose answer the dead process had not recorded is repeated: the ones in flight (at most the
        # sink's concurrency) and the ones answered and settling (SETTLING_ROUNDS times as many, core/leasing.py).
        assert repeats <= ((1 + SETTLING_ROUNDS) * 8 if role == "delivery" else 0), repeats
    finally:
        clients.stop.set()
        assert await daemon.terminate() == 0


class SdkClients:
    """Apps using the Humanloop SDK (its async client, pointed at shipper): each makes prompt logs and updates them,
    one entity after another. What shipper acknowledged is noted per entity: the log alone, or the log and its
    update (a call that failed while a process was replaced was not acknowledged, or its answer was lost)."""

    def __init__(self, rig: Rig, clients: int = 4) -> None:
        self.rig = rig
        self.acked: dict[str, list[str]] = {}
        self.stop = asyncio.Event()
        self._clients = clients

    async def _client(self, client: int) -> None:
        async with sdk.async_humanloop_client(self.rig.host) as hl:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                path = f"load/c{client}-{n % 3}"
                try:
                    log = await hl.prompts.log(path=path, output=f"o{n}", log_status="incomplete")
                except Exception:  # the ingest process is being replaced
                    await asyncio.sleep(0.05)
                    continue
                self.acked[log.id] = HL_OPS[:1]
                with contextlib.suppress(Exception):
                    await hl.prompts.update_log(id=log.prompt_id, log_id=log.id, output=f"f{n}", log_status="complete")
                    self.acked[log.id] = HL_OPS

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._client(c)) for c in range(self._clients)]

    def arrived(self) -> bool:
        """Every acknowledged call reached the fake, in order (an unacknowledged update may have arrived too)."""
        fake = self.rig.hl
        return all(
            list(dict.fromkeys(fake.operations(log_id)))[: len(ops)] == ops for log_id, ops in self.acked.items()
        )


@pytest.mark.parametrize("role", ["delivery", "ingest"])
async def test_kill_9_of_a_role_while_a_vendor_sdk_streams_loses_no_acknowledged_call_and_keeps_each_order(
    tmp_path: Path, role: str
) -> None:
    async with vendor_rig(tmp_path, concurrency=8) as rig:
        clients = SdkClients(rig)
        tasks = clients.start()
        try:
            await wait_for(lambda: len(clients.acked) > 60 and len(rig.hl.received) > 40, timeout=30)
            victim = await pid_of(rig.daemon, role)
            os.kill(victim, signal.SIGKILL)
            await rig.daemon.wait_for_log(f"the {role} process (pid {victim}) died")
            await pid_of(rig.daemon, role, besides=victim)
            before = len(clients.acked)
            await wait_for(lambda: len(clients.acked) > before + 60, timeout=30)  # serving again
        finally:
            clients.stop.set()
            await asyncio.gather(*tasks)
        await wait_for(clients.arrived, timeout=30)
        # The fake answers 404 (and notes a violation) to an update of a log it has not received.
        assert rig.hl.violations == [] and rig.hl.rejected() == []
        # A repeat is a log whose create the dead delivery process had sent without recording the answer.
        assert rig.hl.duplicates <= ((1 + SETTLING_ROUNDS) * 8 if role == "delivery" else 0), rig.hl.duplicates


async def test_a_hung_delivery_process_gives_its_leases_to_the_other_at_their_deadline(
    tmp_path: Path, remote: FakeRemote
) -> None:
    slow = asyncio.Event()

    async def held(request: Any, body: bytes) -> None:
        if slow.is_set():
            await asyncio.sleep(0.5)

    remote.async_behaviour = held
    daemon = Daemon.from_config(config_for(tmp_path, remote, delivery=2, lease=3))
    await daemon.start()
    clients = KeyedClients(daemon, clients=2)
    hung: int | None = None
    try:
        tasks = clients.start()
        await wait_for(lambda: clients.total() > 100, timeout=30)
        slow.set()  # sends now take a while: each delivery process holds leases
        await asyncio.sleep(0.2)
        delivering = [r["pid"] for r in await roles(daemon) if r["role"] == "delivery"]
        assert len(delivering) == 2, delivering
        hung = int(delivering[0])
        os.kill(hung, signal.SIGSTOP)
        clients.stop.set()
        await asyncio.gather(*tasks)
        slow.clear()
        # Everything acknowledged arrives while the hung process stays hung: the other took its leases over.
        await wait_for(lambda: all_arrived(clients, remote), timeout=30)
        check(clients, remote)
    finally:
        clients.stop.set()
        if hung is not None:
            # On a slow machine the wait above may outlast HUNG_AFTER: then the supervisor has killed the hung
            # process, as it should, and there is nothing to continue.
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGCONT)
        assert await daemon.terminate() == 0


async def test_kill_9_of_the_supervisor_takes_every_role_with_it_and_a_restart_delivers_the_rest(
    tmp_path: Path, remote: FakeRemote
) -> None:
    remote.behaviour = lambda request, body: None if len(remote.received) < 50 else aiohttp.web.Response(status=503)
    daemon = Daemon.from_config(config_for(tmp_path, remote))
    await daemon.start()
    clients = KeyedClients(daemon)
    tasks = clients.start()
    await wait_for(lambda: clients.total() > 300, timeout=30)
    pids = [int(r["pid"]) for r in await roles(daemon)]
    await daemon.kill9()
    clients.stop.set()
    await asyncio.gather(*tasks)
    await wait_for(lambda: all(gone(pid) for pid in pids), timeout=10)
    remote.behaviour = None
    await daemon.start()
    try:
        await wait_for(lambda: all_arrived(clients, remote), timeout=30)
        check(clients, remote)
    finally:
        assert await daemon.terminate() == 0


async def test_metrics_and_status_add_up_every_process(tmp_path: Path, remote: FakeRemote) -> None:
    daemon = Daemon.from_config(config_for(tmp_path, remote, delivery=2))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(200):
                item = {"sink": "remote", "path": "/ingest", "body": {"n": n}}
                async with session.post(f"http://{daemon.http}/v1/records", json=item) as response:
                    assert response.status == 202
        await wait_for(lambda: len(remote.received) == 200, timeout=30)
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # the last settlements may still be on their way
                _, samples = await scrape(session, f"http://{daemon.http}")
                if metric(samples, "shipper_records_delivered_total", sink="remote") == 200:
                    break
                await asyncio.sleep(0.05)
        assert metric(samples, "shipper_records_received_total", sink="remote") == 200
        assert metric(samples, "shipper_records_delivered_total", sink="remote") == 200
        # Three processes: their memory adds up (each alone is ~60 MB).
        assert (metric(samples, "process_resident_memory_bytes") or 0) > 3 * 30e6
        running = await roles(daemon)
        assert sorted(r["role"] for r in running) == ["delivery", "delivery", "ingest"], running
        assert all(r["state"] == "running" for r in running)
        async with aiohttp.ClientSession() as session, session.get(f"http://{daemon.http}/v1/status") as response:
            status = orjson.loads(await response.read())
        assert status["sinks"]["remote"]["delivered_since_start"] == 200
    finally:
        assert await daemon.terminate() == 0


async def test_roles_run_alone_share_one_spool_and_a_second_delivery_takes_over_a_dead_ones_leases(
    tmp_path: Path, remote: FakeRemote
) -> None:
    """As two containers on one volume would run them: `--role ingest` and `--role delivery`, no supervisor."""
    release = asyncio.Event()

    async def held(request: Any, body: bytes) -> None:
        await release.wait()

    remote.async_behaviour = held
    config = config_for(tmp_path, remote)
    ingest = Daemon.from_config(config)
    ingest.args = ("--role", "ingest")
    await ingest.start()
    deliveries: list[asyncio.subprocess.Process] = []

    async def delivery() -> None:
        deliveries.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shipper", "run", "--role", "delivery", "--config", str(config)
            )
        )

    try:
        async with aiohttp.ClientSession() as session:
            for n in range(20):
                item = {"sink": "remote", "path": "/ingest", "body": {"n": n}}
                async with session.post(f"http://{ingest.http}/v1/records", json=item) as response:
                    assert response.status == 202
        # A whole shipper on the same spool is refused while roles alone use it.
        code, _, err = await run_cli_async("run", "--config", str(config))
        assert code == 2 and "already using the spool" in err, err
        await delivery()
        await wait_for(lambda: remote.in_flight > 0, timeout=20)  # it holds leases, its sends hang
        deliveries[0].send_signal(signal.SIGKILL)
        await deliveries[0].wait()
        await delivery()
        release.set()
        # The second one gives the dead one's leases back (within a few seconds) and delivers everything.
        await wait_for(lambda: {b["n"] for b in remote.bodies()} == set(range(20)), timeout=30)
    finally:
        release.set()
        for process in deliveries:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
        assert await ingest.terminate() == 0


async def test_a_role_that_stops_answering_is_killed_and_started_again(tmp_path: Path, remote: FakeRemote) -> None:
    """Stopped (SIGSTOP) it may hold the spool's write lock: the supervisor kills it after HUNG_AFTER and starts
    another, and records keep flowing."""
    daemon = Daemon.from_config(config_for(tmp_path, remote))
    await daemon.start()
    try:
        hung = await pid_of(daemon, "delivery")
        os.kill(hung, signal.SIGSTOP)
        await daemon.wait_for_log(f"the delivery process (pid {hung}) stopped answering; killing it", timeout=40)
        await pid_of(daemon, "delivery", besides=hung, timeout=30)
        async with aiohttp.ClientSession() as session:
            item = {"sink": "remote", "path": "/ingest", "body": {"n": 1}}
            async with session.post(f"http://{daemon.http}/v1/records", json=item) as response:
                assert response.status == 202
        await wait_for(lambda: len(remote.received) == 1, timeout=20)
    finally:
        assert await daemon.terminate() == 0


def maps(pid: int, package: str) -> bool:
    """Whether the process has a C extension of `package` mapped: what importing the package leaves behind."""
    return any(f"/{package}/" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


async def test_only_the_delivery_process_loads_tiktoken_and_the_supervisor_no_aiohttp(tmp_path: Path) -> None:
    """Token counting is a delivery step: the ingest process the record went through and the supervisor never
    import tiktoken (its encoding is ~75 MB once built), and the supervisor, which serves nothing, no aiohttp."""
    kw = KeywordsAIFake(api_keys=(sdk.KW_KEY,))
    await kw.start()
    sink = f'[sinks.kw]\ntype = "keywordsai"\nbase_url = "{kw.url}"\n'
    daemon = Daemon.from_config(write_config(tmp_path, sink, daemon_extra="ingest_workers = 1\ndelivery_workers = 1"))
    await daemon.start()
    try:
        log = {
            "model": "gpt-4o-mini",
            "prompt_messages": [{"role": "user", "content": "How many tokens is this?"}],
            "completion_message": {"role": "assistant", "content": "Six or so."},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://{daemon.http}/request-logs/create", json=log, headers={"Authorization": f"Bearer {sdk.KW_KEY}"}
            ) as response,
        ):
            assert response.status == 200, await response.text()
        await wait_for(lambda: len(kw.received) == 1, timeout=20)
        assert kw.received[0].body["metadata"]["shipper_estimated"] == "cost,usage"
        assert daemon.proc is not None
        supervisor, ingest, delivery = daemon.proc.pid, await pid_of(daemon, "ingest"), await pid_of(daemon, "delivery")
        assert maps(delivery, "tiktoken")  # it counted: what the other two do not map is what they never imported
        assert not maps(ingest, "tiktoken")
        assert not maps(supervisor, "tiktoken")
        assert maps(ingest, "aiohttp")
        assert not maps(supervisor, "aiohttp")
    finally:
        assert await daemon.terminate() == 0
        await kw.stop()
