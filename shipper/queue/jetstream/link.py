"""A relay's connection to NATS: made in the background and kept up for as long as the relay runs, with the
JetStream context and the two key-value buckets the relays of a group share once it is up.

Connecting never blocks a start and never gives up: nats-py tries every server each second, and until it is up the
relay simply holds nothing (its messages wait in the stream). The buckets are made when missing: `<bucket>` (no
expiry) for what the relays teach each other, `<bucket>-leases` (every entry expires lease_ttl after its last write)
for who is alive and who owns which partition. Errors are logged once per 30 s with a count, never with a secret.
Not responsible for consuming (consumer.py) or for what goes in the buckets (shared.py, ownership.py).
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
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from shipper.config.relay import RelayConfig
from shipper.jetstream.connect import RECONNECT_WAIT, connect, describe
from shipper.jetstream.options import connect_options
from shipper.logs import Throttled

log = logging.getLogger(__name__)


class Link:
    def __init__(self, config: RelayConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self._options = connect_options("relay", config, environ)  # a bad secret refuses the start, naming the key
        self.errors = Throttled(log)
        self.client = Client()
        self.js: JetStreamContext | None = None
        self.shared: KeyValue | None = None
        self.leases: KeyValue | None = None

    async def connect(self) -> None:
        """Until connected and both buckets are there; every failure is logged (throttled) and tried again."""
        await connect(self.client, self.config.servers, "shipper relay", self._options, self._on_error)
        js = self.client.jetstream(timeout=self.config.timeout)
        while self.shared is None or self.leases is None:
            try:
                self.shared = await self._bucket(js, self.config.bucket, None)
                self.leases = await self._bucket(js, f"{self.config.bucket}-leases", self.config.lease_ttl)
            except (nats.errors.Error, TimeoutError) as exc:
                await self._on_error(exc)
                await asyncio.sleep(RECONNECT_WAIT)
        self.js = js
        log.info("relay: connected to NATS", extra={"stream": self.config.stream})

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error, OSError, asyncio.CancelledError):
            await self.client.close()

    async def _bucket(self, js: JetStreamContext, name: str, ttl: float | None) -> KeyValue:
        try:
            return await js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            pass
        config = KeyValueConfig(bucket=name, ttl=ttl, replicas=self.config.replicas, storage=StorageType.FILE)
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:  # another relay made it just now
            return await js.key_value(name)

    async def _on_error(self, exc: Exception) -> None:
        self.errors.warning("relay: NATS: %s", describe(exc))
