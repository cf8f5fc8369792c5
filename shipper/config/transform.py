"""`[enrich]` and `[redact]`: what shipper may change in a record on its way, redaction at intake and enrichment
just before delivery.

Apart from the sinks because both apply to every vendor's records alike, and their checks (regular expressions,
field paths, the names a redacted record lists) are the redaction rules' own.
Not responsible for applying them (shipper/enrich/, shipper/core/redaction.py).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from shipper.config.section import Section
from shipper.core.redaction import PathRule


class EnrichConfig(Section):
    """Filling in what a vendor record lacks, just before it is forwarded (never on the ingest path)."""

    # Count missing usage with tiktoken, offline: an estimate (marked as one) beats an empty usage column.
    tokens: bool = True
    # Price a missing cost where the vendor's format takes one (Humanloop, Keywords AI) from genai-prices' table.
    cost: bool = True


# The built-in pattern sets (shipper/core/redaction.py defines them).
BuiltinRedaction = Literal["emails", "cards", "api_keys", "bearer_tokens", "aws_keys", "jwts"]
# Names a redacted record may list: a user pattern must not pass for one of these.
_RESERVED_NAMES = frozenset({*get_args(BuiltinRedaction), "drop", "mask"})


def _check_field_path(path: str) -> str:
    PathRule.parse(path)
    return path


class RedactPattern(Section):
    # The name a redacted record lists in its metadata, so it must be short and plain.
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    regex: str = Field(min_length=1)
    # Literal text (no group references): what a match becomes.
    replacement: str = "[REDACTED]"

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RedactConfig(Section):
    """Rules applied to every record before it is written to the spool; all off by default."""

    # Off by default: redaction rewrites what the app chose to log, so the operator decides what to lose.
    builtin: tuple[BuiltinRedaction, ...] = ()
    # Field paths, one glob per dot-separated segment (`inputs.password`, `metadata.*token*`, `**.ssn`).
    drop: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    # What a masked field's value becomes; a string so every vendor's schema still accepts the record.
    mask_with: str = "[REDACTED]"
    patterns: tuple[RedactPattern, ...] = ()

    @field_validator("drop", "mask")
    @classmethod
    def _check_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_field_path(path) for path in value)

    @model_validator(mode="after")
    def _check_names(self) -> RedactConfig:
        names = [p.name for p in self.patterns]
        clash = sorted({n for n in names if names.count(n) > 1 or n in _RESERVED_NAMES})
        if clash:
            raise ValueError(f"pattern names must be unique and differ from built-in rules: {', '.join(clash)}")
        return self
