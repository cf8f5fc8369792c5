"""One partition's durable pull consumer, as the relay that owns the partition runs it: bind (or make) the consumer,
fetch as much as the partition may hold, and say when the partition may hand out rows.

The consumer is `<durable_prefix>-<partition>`, explicit ack, never giving up on a message (max_deliver -1), every
relay of the group binding the same one. The stream hands out at most `max_ack_pending` unacknowledged messages of a
partition, so a relay holds no more than that of it and a backlog waits in the stream.

**Ready.** A partition taken over (at a start, or from a relay that died) may have messages handed to its previous
holder and never acknowledged: the stream hands them out again only once their ack_wait has passed, possibly after
later messages of their key. So no row of the partition leaves until the consumer has no message pending that this
relay does not hold: its `num_ack_pending` equals what the relay holds of it, looked at between fetches while nothing
of the partition is being acknowledged. Then everything unacknowledged is in hand, in stream order, and the
ordering rule over it is exact.
Not responsible for what a message means (queue.py) or for whether this relay owns the partition (ownership.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shipper.config.relay import RelayConfig
from shipper.jetstream.connect import describe
from shipper.logs import Throttled

log = logging.getLogger(__name__)
# A fetch waits this long for a first message (a long poll), then asks again.
FETCH_WAIT = 1.0
# At most this many messages per fetch.
FETCH_MAX = 256
# After a failed NATS call, wait this long before the next.
TROUBLE_PAUSE = 0.5


def durable(config: RelayConfig, partition: int) -> str:
    return f"{config.durable_prefix}-{partition}"


def consumer_config(config: RelayConfig, partition: int) -> ConsumerConfig:
    name = durable(config, partition)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait,
        max_deliver=-1,
        max_ack_pending=config.max_ack_pending,
        filter_subject=f"{config.subject_prefix}.{partition}",
    )


class PartitionConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        config: RelayConfig,
        partition: int,
        held: Callable[[], int],
        quiet: Callable[[], bool],
        admit: Callable[[int, list[Msg]], None],
        on_ready: Callable[[], None],
        errors: Throttled,
    ) -> None:
        """`held`: how many messages of the partition the relay holds; `quiet`: none of them is being acknowledged;
        `admit`: take fetched messages; `on_ready`: the partition may hand out rows now."""
        self.partition = partition
        self.ready = False
        self.pending = 0  # messages of the partition in the stream not handed out yet (the lag), as last seen
        self.room = asyncio.Event()  # set when the relay let go of a message of the partition
        self.stopped = False  # checked by every loop: a cancellation can be lost (tasks.py)
        self._js = js
        self._config = config
        self._held = held
        self._quiet = quiet
        self._admit = admit
        self._on_ready = on_ready
        self._errors = errors

    def stop(self) -> None:
        """No row of the partition leaves from now, and the loops end at their next turn."""
        self.ready = False
        self.stopped = True
        self.room.set()

    async def run(self) -> None:
        sub = await self._bind()
        if sub is None:
            return
        try:
            while not self.stopped:
                if not self.ready:
                    await self._look_ready(sub)
                room = self._config.max_ack_pending - self._held()
                if room <= 0:
                    self.room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.room.wait(), FETCH_WAIT)
                    continue
                try:
                    msgs = await sub.fetch(min(room, FETCH_MAX), timeout=FETCH_WAIT)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.Error, OSError) as exc:
                    self._errors.warning("relay: partition %d: cannot fetch: %s", self.partition, describe(exc))
                    await asyncio.sleep(TROUBLE_PAUSE)
                    continue
                if msgs:
                    self.pending = msgs[-1].metadata.num_pending
                    self._admit(self.partition, msgs)
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def _bind(self) -> JetStreamContext.PullSubscription | None:
        """Make the consumer (or bring its configuration up to date) and subscribe, for as long as it takes (None:
        stopped meanwhile)."""
        c = self._config
        name = durable(c, self.partition)
        while not self.stopped:
            try:
                await self._js.add_consumer(c.stream, consumer_config(c, self.partition))
                return await self._js.pull_subscribe_bind(durable=name, stream=c.stream)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                self._errors.warning("relay: partition %d: cannot bind %s: %s", self.partition, name, describe(exc))
                await asyncio.sleep(TROUBLE_PAUSE)
        return None  # stopped while binding

    async def _look_ready(self, sub: JetStreamContext.PullSubscription) -> None:
        if not self._quiet():
            return
        try:
            info = await sub.consumer_info()
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            self._errors.warning("relay: partition %d: cannot read its consumer: %s", self.partition, describe(exc))
            return
        self.pending = info.num_pending or 0
        if (info.num_ack_pending or 0) <= self._held() and self._quiet():
            self.ready = True
            log.debug("relay: partition %d ready (%d held)", self.partition, self._held())
            self._on_ready()
