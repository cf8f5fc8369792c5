"""What a relay holds of the stream, as a plain table: the messages it was handed and has not had acknowledged yet,
by stream sequence, with the ordering rule (core/order.py) applied to them exactly as the spool applies it.

A row's id is its message's stream sequence, which is the order the sidecars' PubAcks gave it: what the rule needs.
A message handed out again (the stream redelivers the same sequence: an in_progress() came late, or the relay that
had it died) is recognised by its sequence and never becomes a second row, so it is never sent twice at once. A row
whose outcome is recorded (delivered or dead-lettered) stays until the stream confirms its acknowledgement: until
then it still blocks the later rows of its key, so a lost acknowledgement (a repeat after a crash) can never land
after them. Retries stay here too, due at their time: the message is held, never nak'ed, so nothing later of its
key can pass it, and the relay keeps it with in_progress() (queue.py).
Not responsible for NATS (queue.py, consumer.py) or for when a partition may hand out rows (readiness, ownership).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from shipper.core import order
from shipper.core.rows import SpoolRow

H = TypeVar("H")  # the handle a message is acknowledged through (a nats-py Msg; anything in tests)


@dataclass(slots=True)
class Held(Generic[H]):
    row: SpoolRow  # id: the stream sequence
    partition: int
    handle: H  # the latest delivery of the message: acks and in_progress() go to it
    touched: float  # (monotonic) when the stream last heard that the message is being worked on
    due: float = 0.0  # (epoch) not before then: a retry's backoff
    leased_until: float = 0.0  # (epoch) handed to a sender until then
    settled: bool = False  # delivered or dead-lettered: its acknowledgement is under way
    buried: int | None = None  # the dead letter's id, once written (a settlement tried again writes it once)


class Holding(Generic[H]):
    def __init__(self) -> None:
        self._held: dict[int, Held[H]] = {}  # in stream order (kept sorted: see admit)
        self._per_sink: Counter[str] = Counter()
        self._last = 0

    def __len__(self) -> int:
        return len(self._held)

    def get(self, seq: int) -> Held[H] | None:
        return self._held.get(seq)

    def admit(self, row: SpoolRow, partition: int, handle: H, now: float) -> bool:
        """Hold a message handed to this relay; False when it is held already (a redelivery), whose handle and time
        are then refreshed and nothing else changes (leased, due or settled as it was)."""
        held = self._held.get(row.id)
        if held is not None:
            held.handle = handle
            held.touched = now
            return False
        self._held[row.id] = Held(row, partition, handle, now)
        self._per_sink[row.sink] += 1
        if row.id < self._last:  # a message handed out again after later ones (another relay's, taken over)
            self._held = dict(sorted(self._held.items()))
        self._last = max(self._last, row.id)
        return True

    def eligible(self, sink: str, now: float, ready: Callable[[int], bool]) -> Iterator[SpoolRow]:
        """The rows of `sink` that may be sent now, in stream order: the rule's choice among every held row of the
        sink (settled and leased ones still block their kin); `ready` says whether a partition may hand out rows."""

        def free(w: order.Waiting) -> bool:
            held = self._held[w.id]
            return not held.settled and held.due <= now and held.leased_until <= now and ready(held.partition)

        return (self._held[w.id].row for w in order.eligible(self._waiting(sink), free))

    def lease(self, rows: Iterable[SpoolRow], until: float) -> list[SpoolRow]:
        """Hand rows to a sender until `until`; each as this attempt (its attempts so far, plus one)."""
        out = []
        for row in rows:
            self._held[row.id].leased_until = until
            out.append(row._replace(attempts=row.attempts + 1))
        return out

    def retry(self, seq: int, due: float, unanswered: bool) -> None:
        held = self._held.get(seq)
        if held is not None and not held.settled:
            held.row = held.row._replace(attempts=held.row.attempts + 1, unanswered=held.row.unanswered + unanswered)
            held.due = due
            held.leased_until = 0.0

    def release(self, seq: int) -> None:
        held = self._held.get(seq)
        if held is not None:
            held.leased_until = 0.0

    def settle(self, seq: int) -> Held[H] | None:
        """Its outcome is recorded: it waits only for its acknowledgement now. None if it is not held (any more)."""
        held = self._held.get(seq)
        if held is None or held.settled:
            return None
        held.settled = True
        held.leased_until = 0.0
        return held

    def forget(self, seq: int) -> Held[H] | None:
        """The stream confirmed its acknowledgement (or the relay no longer owns its partition)."""
        held = self._held.pop(seq, None)
        if held is not None:
            self._per_sink[held.row.sink] -= 1
            if not self._per_sink[held.row.sink]:
                del self._per_sink[held.row.sink]
        return held

    def dependants(self, create: SpoolRow) -> list[SpoolRow]:
        """The held rows that die with a dead create (younger, its key or naming it `after`), not settled already."""
        waiting = order.Waiting(create.id, create.key, create.scope, create.after, create.kind)
        found = order.dependants(waiting, self._waiting(create.sink))
        return [self._held[w.id].row for w in found if not self._held[w.id].settled]

    def keyed(self, sink: str, key: str, kind: str) -> list[SpoolRow]:
        """The held rows of `sink` with this key and kind, in stream order, not settled (what a row joins)."""
        return [h.row for h in self._held.values() if (h.row.sink, h.row.key, h.row.kind) == (sink, key, kind)
                and not h.settled]  # fmt: skip

    def next_due(self, sink: str, now: float) -> float | None:
        later = [h.due for h in self._held.values() if h.row.sink == sink and h.due > now and not h.settled]
        return min(later) if later else None

    def stale(self, before: float) -> list[Held[H]]:
        """Held messages the stream last heard of before `before`: an in_progress() is due for them."""
        return [h for h in self._held.values() if h.touched < before]

    def in_partition(self, partition: int) -> list[Held[H]]:
        return [h for h in self._held.values() if h.partition == partition]

    def sinks(self) -> set[str]:
        """The sinks held rows are for (kept as rows come and go: asked after every acknowledgement)."""
        return set(self._per_sink)

    def _waiting(self, sink: str) -> Iterator[order.Waiting]:
        return (
            order.Waiting(h.row.id, h.row.key, h.row.scope, h.row.after, h.row.kind)
            for h in self._held.values()
            if h.row.sink == sink
        )
