"""An LLM span joined to the content its logs carried, in process: the held span and its parts in the in-memory
queue (in either order of arrival), the vendor sink sending the held span, once due, as the record with the messages
to a real local remote, and the parts leaving the queue with that delivery; a part whose span never came is
dead-lettered as an orphan once kept long enough."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from shipper.config.sinks import VendorSinkConfig
from shipper.core.decide import Policy, decide
from shipper.core.retry import Verdict
from shipper.otlp.join import PART_KEEP, PART_KIND
from shipper.otlp.plan import plan_logs, plan_spans
from shipper.queue.memory import MemoryQueue
from shipper.sinks.vendor import VendorSink
from shipper.vendors import VENDORS
from tests.otlp_spans import DETAILS_EVENT, NO_CONTENT, OLD_EVENTS, export, logs_export, span
from tests.support import FakeRemote

ASKED = [{"role": "system", "content": "Be terse"}, {"role": "user", "content": "What is 2+2?"}]
REPLY = {"role": "assistant", "content": "4"}
NOW = 1_800_000_000.0
WAIT = 5.0


@pytest.fixture
async def remote() -> AsyncIterator[FakeRemote]:
    started = FakeRemote()
    await started.start()
    yield started
    await started.stop()


class Rig:
    def __init__(self, remote: FakeRemote) -> None:
        self.now = NOW
        self.queue = MemoryQueue(clock=lambda: self.now)
        config = VendorSinkConfig(type="keywordsai", base_url=remote.url, api_key_env="KEY")
        self.sink = VendorSink("kw", VENDORS["keywordsai"], config, self.queue, {"KEY": "kw-key"})

    async def spans(self) -> None:
        await self.queue.append(plan_spans(export(span(NO_CONTENT)), [self.sink], NOW + WAIT).rows)

    async def logs(self, *records: object) -> None:
        await self.queue.append(plan_logs(logs_export(*records), [self.sink], NOW + PART_KEEP).rows)  # type: ignore[arg-type]

    async def send_due(self) -> list[Verdict]:
        """Lease what is due now, send it, and settle it as the forwarder would."""
        lease = await self.queue.lease("kw", 10)
        verdicts = []
        for row in lease.rows:
            outcome = await self.sink.send([row])
            decision = decide([row], outcome, Policy(1.0, 1.0, 5, None), self.now, random.Random(0))
            settlement = decision.settlement  # type: ignore[union-attr]
            await self.queue.settle(settlement.delivered, settlement.retry, settlement.dead)
            verdicts.append(outcome.verdict)
        return verdicts


@pytest.mark.parametrize("logs_first", [True, False], ids=["logs-first", "span-first"])
@pytest.mark.parametrize("records", [OLD_EVENTS, (DETAILS_EVENT,)], ids=["old-events", "details-event"])
async def test_a_held_span_is_sent_once_due_as_its_record_with_the_messages_its_logs_brought(
    remote: FakeRemote, logs_first: bool, records: tuple[object, ...]
) -> None:
    rig = Rig(remote)
    await rig.sink.start()
    try:
        if logs_first:
            await rig.logs(*records)
        await rig.spans()
        if not logs_first:
            await rig.logs(*records)
        assert await rig.send_due() == []  # the span waits for its logs; the parts are never sent by themselves
        rig.now = NOW + WAIT
        assert await rig.send_due() == [Verdict.DELIVERED]
    finally:
        await rig.sink.close()
    (got,) = remote.received
    assert (got.json()["prompt_messages"], got.json()["completion_message"]) == (ASKED, REPLY)
    assert got.path == "/api/request-logs/create/" and got.headers["Authorization"] == "Bearer kw-key"
    assert rig.queue.rows == {}  # the parts went with the record they were joined to


async def test_a_part_whose_span_never_came_is_dead_lettered_as_an_orphan_once_kept_long_enough(
    remote: FakeRemote,
) -> None:
    rig = Rig(remote)
    await rig.sink.start()
    try:
        await rig.logs(*OLD_EVENTS)
        rig.now = NOW + PART_KEEP - 1
        assert await rig.send_due() == []
        rig.now = NOW + PART_KEEP
        # One at a time: the parts of a span share its key.
        assert [await rig.send_due() for _ in OLD_EVENTS] == [[Verdict.REJECT]] * 3
    finally:
        await rig.sink.close()
    assert remote.received == [] and rig.queue.rows == {}
    assert all(dead.row.kind == PART_KIND and "orphan" in dead.reason for dead in rig.queue.dead.values())
