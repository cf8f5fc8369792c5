"""Strict fake vendor upstreams (real aiohttp servers on 127.0.0.1) and the vendors' SDK snippets that drive them."""

from tests.fakes.base import BAD_REQUEST, RATE_LIMITED, RESET, TOO_LARGE, UNAVAILABLE, FakeVendor, Fault, Seen
from tests.fakes.freeplay import FreeplayFake
from tests.fakes.humanloop import HumanloopFake
from tests.fakes.keywordsai import KeywordsAIFake

__all__ = [
    "BAD_REQUEST",
    "RATE_LIMITED",
    "RESET",
    "TOO_LARGE",
    "UNAVAILABLE",
    "FakeVendor",
    "Fault",
    "FreeplayFake",
    "HumanloopFake",
    "KeywordsAIFake",
    "Seen",
]
