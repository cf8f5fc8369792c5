"""Domain errors name a refusal; the HTTP layer alone maps each to its status (ingest/responses.py STATUS)."""

from __future__ import annotations

import re
from pathlib import Path

from shipper.ingest.responses import STATUS, status_of
from shipper.records import BadInput

SHIPPER = Path(__file__).resolve().parents[2] / "shipper"


def raised_codes() -> set[str]:
    codes: set[str] = set()
    for module in SHIPPER.rglob("*.py"):
        codes.update(re.findall(r'BadInput\(\s*"([a-z0-9_]+)"', module.read_text()))
    return codes


def test_every_code_shipper_raises_has_its_status_and_none_is_stale() -> None:
    assert raised_codes() == set(STATUS)


def test_the_status_is_the_http_layers_not_the_errors() -> None:
    error = BadInput("too_deep", "nested deeper than 64 levels")
    assert not hasattr(error, "status")
    assert status_of(error) == 400
    assert status_of(BadInput("invalid_record", "x", index=1, field="sink")) == 422
