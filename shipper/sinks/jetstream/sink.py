"""`type = "jetstream"`: publish spooled rows into a replicated NATS JetStream stream, for relays to deliver.

The sidecar's SQLite spool stays the acknowledgement boundary: the app's record was acknowledged when the spool had
it, and the row leaves the spool only when the stream's PubAck for it came back (the stream has it on a majority of
its replicas). A send publishes its rows with `publish_async` (every row on the wire before any PubAck is awaited;
publishes awaiting a PubAck are bounded by concurrency x batch_max_records) and is delivered when every row's PubAck
came within `timeout`. Anything else retries the whole send: rows the stream took already are published again with
the same `Nats-Msg-Id`, and the stream's dedup window drops them (a PubAck that says `duplicate`).

Order: the spool leases a key's next row only once the row before it is settled, which here is after its PubAck, so
a key's rows are stored in the stream in acknowledgement order; `after` waits the same way. Each row goes to the
subject `<subject_prefix>.<partition>`, the partition of its ordering group (core/partition.py), so what must stay
ordered shares one partition and a consumer keeping order per partition keeps it for the fleet.
Not responsible for consuming the stream (a relay), nor for retries and ordering (the forwarder and the spool).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from shipper.config.sinks import JetStreamSinkConfig
from shipper.core.partition import partition_of
from shipper.core.retry import Outcome, Verdict
from shipper.core.rows import SpoolRow
from shipper.jetstream.envelope import MSG_ID, encode, msg_id
from shipper.sinks.base import Batching
from shipper.sinks.jetstream.connection import Link
from shipper.sinks.jetstream.state import SidecarState, state_path


class JetStreamSink:
    def __init__(self, name: str, config: JetStreamSinkConfig, environ: Mapping[str, str], spool: Path) -> None:
        self.name = name
        self.concurrency = config.concurrency
        bundles = config.bundle_max_records > 1  # a bundle is published as one message
        self.batching = Batching(config.batch_max_records, timeout=config.batch_timeout, bundles=bundles)
        self.published = 0  # rows the stream confirmed (stored now, or a repeat of one it had)
        self.duplicates = 0  # PubAcks that said the stream had the row already: repeats it dropped
        self._config = config
        self._link = Link(name, config, environ, config.concurrency * config.batch_max_records)
        self._state = SidecarState(state_path(spool), name)
        self._opened = False
        self._opening = asyncio.Lock()
        self._sending: set[tuple[asyncio.Future[PubAck], ...]] = set()  # each send's publishes, while it waits

    @property
    def pending_acks(self) -> int:
        """Publishes on the wire whose PubAck has not come yet (at most concurrency x batch_max_records)."""
        return sum(1 for futures in self._sending for future in futures if not future.done())

    async def start(self) -> None:
        """Nothing to do yet: the connection starts with the first send, so processes that only ingest (and build
        every sink) never connect."""

    async def close(self) -> None:
        await self._link.close()
        if self._opened:
            await self._state.close()
            self._opened = False

    async def send(self, rows: Sequence[SpoolRow]) -> Outcome:
        async with self._opening:  # the first sends come together: one of them opens, the others wait for it
            if not self._opened:
                try:
                    await self._state.open()
                except (OSError, sqlite3.Error) as exc:
                    return Outcome(Verdict.RETRY, None, f"cannot open {self._state.path}: {exc}")
                self._opened = True
                self._link.start()
        js = await self._link.ready()
        if isinstance(js, str):
            return Outcome(Verdict.RETRY, None, js)
        sidecar = self._state.sidecar
        payloads = [encode(row, sidecar, self._config.target) for row in rows]
        limit = self._link.max_payload
        for row, payload in zip(rows, payloads, strict=True):
            if len(payload) > limit:
                return Outcome(Verdict.REJECT, None, f"row {row.id}: {len(payload)} bytes, over NATS's {limit}")
        try:
            groups = await self._state.groups(rows)
        except sqlite3.Error as exc:
            return Outcome(Verdict.RETRY, None, f"cannot record ordering groups in {self._state.path}: {exc}")
        subjects = [
            f"{self._config.subject_prefix}.{partition_of(group, self._config.partitions, row.id)}"
            for row, group in zip(rows, groups, strict=True)
        ]
        return await self._publish(js, [msg_id(sidecar, row) for row in rows], subjects, payloads)

    async def _publish(
        self, js: JetStreamContext, ids: list[str], subjects: list[str], payloads: list[bytes]
    ) -> Outcome:
        pending: list[asyncio.Future[PubAck]] = []
        timeout = self._config.timeout
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(timeout):
                for identity, subject, payload in zip(ids, subjects, payloads, strict=True):
                    headers = {MSG_ID: identity}
                    # No wait_stall: with one, nats-py wraps each publish's slot in a wait_for (a task and a timer
                    # per row), which halved the rate (4,300 -> 9,100 records/s); the send's deadline bounds it.
                    pending.append(await js.publish_async(subject, payload, None, self._config.stream, headers))
                sending = tuple(pending)
                self._sending.add(sending)
                try:
                    acks = await asyncio.gather(*pending)
                finally:
                    self._sending.discard(sending)
        except TimeoutError:
            refused = self._link.refused_since(started)
            why = f"the stream refused a row: {refused}" if refused else f"no PubAck within {timeout:g}s"
            return self._failed(pending, why)
        except nats.js.errors.APIError as exc:
            return self._failed(pending, f"the stream refused a row: {exc.description or exc}")
        except (nats.errors.Error, OSError) as exc:
            return self._failed(pending, f"cannot publish: {type(exc).__name__}")
        finally:
            _release(pending)  # also when the send is cancelled (a shutdown's drain)
        self.published += len(acks)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)
        return Outcome(Verdict.DELIVERED)

    def _failed(self, pending: list[asyncio.Future[PubAck]], detail: str) -> Outcome:
        """Retry this send. Rows on the wire may be stored already (the stream drops their repeat): unanswered, so
        a later delivery counts as a possible redelivery. The stream is looked at again before the next send (it
        may have been deleted or changed)."""
        self._link.recheck()
        return Outcome(Verdict.RETRY, None, detail, unanswered=bool(pending))


def _release(pending: list[asyncio.Future[PubAck]]) -> None:
    """Free the PubAck slots of publishes not answered (a PubAck that never comes would hold its slot for ever);
    look at the failures of those answered, so asyncio does not warn of exceptions never retrieved."""
    for future in pending:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
