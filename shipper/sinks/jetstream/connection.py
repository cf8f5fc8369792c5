"""The link from a `jetstream` sink to its NATS servers: a connection made (with jetstream/options.py's options)
in the background and kept up for as long as the sink lives, and the stream checked (or created) once connected.

Connecting never blocks a start and never gives up: with NATS down the sink answers "not connected" (a retry the
forwarder's breaker paces) while nats-py keeps trying every server, and the sidecar keeps acknowledging from its
spool. Secrets (token, password, nkey seed, .creds) come from files or the environment and go only to nats-py;
connection errors are logged once per 30 s with a count, never with a secret.
Not responsible for messages or what a PubAck means (sink.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from shipper.config.sinks import JetStreamSinkConfig
from shipper.jetstream.connect import CONNECT_TIMEOUT, connect, describe
from shipper.jetstream.options import connect_options
from shipper.logs import Throttled
from shipper.tasks import stop

log = logging.getLogger(__name__)
LEADER_POLL = 0.05


class Link:
    """One NATS connection for one sink, made and kept in the background; `js` is None until it is up."""

    def __init__(self, name: str, config: JetStreamSinkConfig, environ: Mapping[str, str], max_pending: int) -> None:
        self._name = name
        self._config = config
        self._options = connect_options(f"sinks.{name}", config, environ)
        self._max_pending = max_pending
        self._errors = Throttled(log)
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._checking = asyncio.Lock()
        self._refusal: tuple[float, str] | None = None  # (monotonic time, what) of the stream's last refusal

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._connect(), name=f"jetstream-connect-{self._name}")

    async def close(self) -> None:
        if self._task is not None:
            await stop(self._task)
            self._task = None
        if self._client is not None:
            with contextlib.suppress(nats.errors.Error, OSError, asyncio.CancelledError):
                await self._client.close()
            self._client = None
        self._js = None

    @property
    def max_payload(self) -> int:
        return self._client.max_payload if self._client is not None else 1 << 20

    def recheck(self) -> None:
        self._stream_ready = False

    async def ready(self) -> JetStreamContext | str:
        """The JetStream context, once connected and the stream is there; else why not (for the retry's detail).
        Before the first connection, waits for it as long as connecting to one server may take: a sidecar's first
        send is not a failure because the connection had only just started."""
        if self._js is None and self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=CONNECT_TIMEOUT)
        if self._js is None or self._client is None or not self._client.is_connected:
            return f"not connected to NATS ({', '.join(self._config.servers)})"
        if not self._stream_ready:
            # One look at a time: the first sends come together, and each creating the stream (and asking for its
            # info while it is being placed) cost a JetStream API request the servers could drop, unanswered
            # until `timeout`, with that send's rows held meanwhile (a 10 s stall of a fresh sidecar, measured).
            async with self._checking:
                if not self._stream_ready:
                    problem = await self._ensure_stream(self._js)
                    if problem is not None:
                        return problem
                    self._stream_ready = True
        return self._js

    async def _connect(self) -> None:
        """Connect, for as long as it takes: nats-py tries every server each `RECONNECT_WAIT` and never gives up;
        anything it raises all the same is logged and tried again. The client exists before it connects, so that
        `close` can stop it (and its tasks) even mid-attempt."""
        client = self._client = Client()
        await connect(client, self._config.servers, f"shipper sink {self._name}", self._options, self._on_error)
        self._js = client.jetstream(timeout=self._config.timeout, publish_async_max_pending=self._max_pending)
        log.info("sink %s: connected to NATS", self._name, extra={"sink": self._name})

    def refused_since(self, since: float) -> str | None:
        """What the stream last refused a publish for, if it did after `since` (monotonic time)."""
        if self._refusal is None or self._refusal[0] < since:
            return None
        return self._refusal[1]

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.js.errors.APIError):
            # nats-py 2.16 answers a refused publish_async (a 503 "maximum bytes exceeded", say) here: its reply
            # handler raises the error instead of setting it on the PubAck's future, which then never resolves.
            self._refusal = (asyncio.get_running_loop().time(), exc.description or type(exc).__name__)
            self._errors.warning("sink %s: the stream refused a publish: %s", self._name, self._refusal[1])
            return
        self._errors.warning("sink %s: NATS connection: %s", self._name, describe(exc))

    async def _ensure_stream(self, js: JetStreamContext) -> str | None:
        """None when the stream is there, led, and drops repeats long enough; else what is wrong. A stream just
        created (here or by another sidecar) has no leader for a moment: waited for, up to `timeout`."""
        c = self._config
        deadline = asyncio.get_running_loop().time() + c.timeout
        while True:
            info = await self._stream(js)
            if isinstance(info, str):
                return info
            if info.cluster is None or info.cluster.leader:
                break
            if asyncio.get_running_loop().time() > deadline:
                return f"stream {c.stream} has no leader"
            await asyncio.sleep(LEADER_POLL)
        window = info.config.duplicate_window or 0
        if window < c.duplicate_window:
            return (
                f"stream {c.stream} drops repeats only within {window:g}s, shorter than duplicate_window"
                f" ({c.duplicate_window:g}s): raise the stream's duplicate_window or lower the sink's"
            )
        return None

    async def _stream(self, js: JetStreamContext) -> StreamInfo | str:
        """The stream's info, creating the stream first if it is missing and the sink may; else what went wrong."""
        c = self._config
        try:
            return await js.stream_info(c.stream)
        except nats.js.errors.NotFoundError:
            if not c.create_stream:
                return f"stream {c.stream} does not exist (create_stream is false)"
        except (nats.errors.Error, TimeoutError) as exc:
            return f"cannot look up stream {c.stream}: {describe(exc)}"
        try:
            info = await js.add_stream(
                StreamConfig(
                    name=c.stream,
                    subjects=[f"{c.subject_prefix}.>"],
                    num_replicas=c.replicas,
                    duplicate_window=c.duplicate_window,
                    storage=StorageType.FILE,
                    retention=RetentionPolicy(c.retention),
                    max_bytes=c.max_bytes,
                    max_age=c.max_age,
                    discard=DiscardPolicy.NEW,  # full: refuse the next message (it waits in a spool), drop none
                )
            )
        except (nats.errors.Error, TimeoutError) as exc:
            return f"cannot create stream {c.stream}: {describe(exc)}"
        log.info("sink %s: created stream %s", self._name, c.stream, extra={"sink": self._name})
        return info
