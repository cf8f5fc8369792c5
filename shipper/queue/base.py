"""The queue seam: what intake and delivery need from "where rows wait", as protocols.

Intake depends only on `Appender`; delivery only on `Leaser` and `Lookups`; the health routes on `Health`. The
SQLite spool (spool/store.py) and the in-memory queue (queue/memory.py) implement all four; a queue in another
process or on a stream (a JetStream consumer) implements them too. The seam is shaped for that: a lease is a
deadline, not a lock held by this process (a dead holder's rows come back when it passes); `watch` is a hint, never
the only way to learn that rows wait (a forwarder also looks after each send and at an idle interval), so a wake-up
may cross a process or be lost; lookups are keyed values that may live in a shared store.
Not responsible for the ordering rule (core/order.py), which every implementation follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from shipper.core.rows import DeadLetter, Lease, Retry
from shipper.errors import DiskFull
from shipper.records import NewRow


class Appender(Protocol):
    async def append(self, rows: Sequence[NewRow]) -> list[int]:
        """Durably add rows; returns their ids once they would survive a crash (then, and only then, acknowledge)."""
        ...


class Leaser(Protocol):
    def watch(self, sink: str, callback: Callable[[int], None]) -> None:
        """Call `callback(count)` when rows for `sink` were added: a hint to look now."""
        ...

    async def lease(self, sink: str, limit: int, max_bytes: int = 1 << 62, bundles: bool = False) -> Lease:
        """Rows of `sink` that may leave now under the ordering rule, at most `limit` records and about `max_bytes`,
        each leased until a deadline after which it may be handed out again. A bundle is handed out whole only to a
        sender that takes bundles (`bundles`) and only if it fits; otherwise it is split into its records first."""
        ...

    async def settle(
        self,
        delivered: Iterable[int] = (),
        retry: Iterable[Retry] = (),
        dead: Iterable[DeadLetter] = (),
        released: Iterable[int] = (),
        learned: Iterable[tuple[str, str, str]] = (),
        unbundled: Iterable[int] = (),
    ) -> None:
        """Record what came of sends: gone, due again at a time, dead-lettered (with dependants), handed back, or
        (bundles refused whole) handed back as their records."""
        ...


class Lookups(Protocol):
    async def credential(self, credential_id: int) -> str | None:
        """The API key stored for rows that carry `credential_id`."""
        ...

    async def upstream_id(self, sink: str, local: str) -> str | None:
        """The remote's id for an id shipper made up for the app, once a delivered create taught it."""
        ...

    async def keyed(self, sink: str, key: str, kind: str) -> list[tuple[int, bytes]]:
        """(id, body) of the queued rows of `sink` with this key and kind, in id order: what a row joins at its
        send (an LLM span the log records carrying its messages, shipper/otlp/join.py)."""
        ...


class Health(Protocol):
    path: Path
    failure: BaseException | None  # why the writer died, if it did
    disk_full: DiskFull | None  # set while appends fail for want of space

    async def ping(self) -> None:
        """Prove the queue takes a transaction now."""
        ...


class Source(Leaser, Lookups, Protocol):
    """What delivery needs: the rows to lease and the lookups its sinks make (a spool, or a relay's stream)."""


class Queue(Appender, Leaser, Lookups, Health, Protocol):
    """Everything a daemon composes from one queue."""

    async def close(self) -> None: ...
