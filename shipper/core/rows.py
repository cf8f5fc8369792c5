"""The values that cross a queue's boundary: rows handed out by a lease and the outcomes handed back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class SpoolRow(NamedTuple):
    """A leased row: a tuple, because the writer builds thousands per lease straight from SQLite's rows."""

    id: int
    sink: str
    key: str | None
    method: str
    path: str
    query: bytes | None
    body: bytes
    created_at: float
    attempts: int
    scope: str | None = None
    after: str | None = None
    kind: str | None = None
    credential_id: int | None = None
    records: int = 1  # a bundle carries several records, its bodies joined by newlines (core/bundle.py)
    unanswered: int = 0  # ended attempts the remote may have taken: delivering it now may be a repeat


@dataclass(frozen=True, slots=True)
class Retry:
    id: int
    next_attempt_at: float
    error: str
    unanswered: bool = False  # the attempt was sent and no answer came back: the remote may have taken it


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    status: int | None
    response: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Lease:
    rows: list[SpoolRow]
    next_due: float | None  # when a row now backing off becomes eligible, if nothing else is


@dataclass(slots=True)
class Settlement:
    """Everything the forwarder learnt from some sends; merged with others and committed in one transaction."""

    delivered: list[int] = field(default_factory=list)
    retry: list[Retry] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    learned: list[tuple[str, str, str]] = field(default_factory=list)  # (sink, id told to the app, remote's id)
    unbundled: list[int] = field(default_factory=list)  # bundles the remote refused whole: back as their records

    def merge(self, other: Settlement) -> None:
        self.delivered += other.delivered
        self.retry += other.retry
        self.dead += other.dead
        self.released += other.released
        self.learned += other.learned
        self.unbundled += other.unbundled
