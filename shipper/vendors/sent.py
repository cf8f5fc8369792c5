"""A vendor's rows as they are forwarded: where shipper's marks go, and where token counts and cost go.

Enrichment (a delivery step) and redaction (an intake step) are vendor-neutral: they find the row's `Sent` entry by
method and forwarded path in its vendor's table and do what it says. A `Sent` entry reads the vendor's body and
points at its fields; it never counts, prices or redacts anything itself. Not responsible for routing drop-in calls
(base.py) or for counting and pricing (enrich/).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Locator = Callable[[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Usage:
    """Where one record's usage goes, read off its body: enrich fills the fields the app left out (absent or null).

    `prompt` is what the prompt tokens count (a message list, with `tools`, or a plain text), `completion` the reply;
    either None is not counted. Counts and cost go into the dict at `at` (a path from the body; created when absent).
    `cost` names one field (the total), two (input and output), or none when the vendor prices usage itself."""

    model: Any
    prompt: Any
    completion: Any
    tools: Any = None
    provider: Any = None
    at: tuple[str, ...] = ()
    prompt_tokens: str = "prompt_tokens"
    completion_tokens: str = "completion_tokens"
    cost: tuple[str, ...] = ()


UsageReader = Callable[[dict[str, Any]], Usage | None]


@dataclass(frozen=True, slots=True)
class Sent:
    """One kind of forwarded row, matched by method and path (relative to the sink's base URL)."""

    method: str
    pattern: re.Pattern[str]
    marks: Locator  # the dicts shipper's marks (`shipper_redacted`, `shipper_estimated`) go into
    usage: UsageReader | None = None  # None: the record carries no usage


def sent(method: str, pattern: str, marks: Locator, usage: UsageReader | None = None) -> Sent:
    return Sent(method, re.compile(pattern + r"$"), marks, usage)


def find_sent(table: Sequence[Sent], method: str, path: str) -> Sent | None:
    for candidate in table:
        if candidate.method == method and candidate.pattern.match(path) is not None:
            return candidate
    return None


def dict_at(*names: str, create: bool = True) -> Locator:
    """The dict at this path in the body, created on the way when absent (`create`), else only when it is there."""

    def locate(body: dict[str, Any]) -> list[dict[str, Any]]:
        target = body
        for name in names:
            value = target.get(name)
            if value is None and create:
                value = target[name] = {}
            if not isinstance(value, dict):
                return []
            target = value
        return [target]

    return locate


def itself(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body is the metadata (a metadata PATCH)."""
    return [body]


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
