"""The seam between the vendor-neutral forwarder and one destination.

A sink turns leased spool rows into one request to its remote and says what the answer means. HTTP sinks split
that into two pure steps (`build_request`, `classify`) around a shared transport, so vendor adapters are pure
functions with table-driven tests. Not responsible for retries, ordering or the spool: the forwarder owns those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shipper.core.retry import Outcome
from shipper.core.rows import SpoolRow


@dataclass(frozen=True, slots=True)
class Batching:
    """How many records one send may carry and how long a partial batch may wait; (1, -, 0) means replay.
    `bundles`: a row may carry several records (sinks/bundling.py), which the sink sends as they are."""

    max_records: int = 1
    max_bytes: int = 1 << 62
    timeout: float = 0.0
    bundles: bool = False


class Sink(Protocol):
    name: str
    batching: Batching
    concurrency: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, rows: Sequence[SpoolRow]) -> Outcome:
        """Deliver rows as one unit; never raises for remote or network failures, returns an Outcome instead."""
        ...


@dataclass(frozen=True, slots=True)
class OutRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def failure_detail(status: int, answer: bytes, secrets: Sequence[str | None] = ()) -> str:
    """`HTTP <status>: <start of the answer>`, with any key we sent blanked: some remotes quote the header back."""
    text = answer.decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return f"HTTP {status}: {text[:512]}"
