from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes import FreeplayFake, HumanloopFake, KeywordsAIFake
from tests.fakes.snippets import close_freeplay_session
from tests.support import FakeRemote


@pytest.fixture
async def remote() -> AsyncIterator[FakeRemote]:
    server = FakeRemote()
    await server.start()
    yield server
    await server.stop()


# -- fake vendor upstreams (tests/fakes) ------------------------------------------------------------------------


@pytest.fixture
async def fp_fake() -> AsyncIterator[FreeplayFake]:
    async with FreeplayFake() as fake:
        yield fake
    close_freeplay_session()


@pytest.fixture
async def hl_fake() -> AsyncIterator[HumanloopFake]:
    async with HumanloopFake() as fake:
        yield fake


@pytest.fixture
async def kw_fake() -> AsyncIterator[KeywordsAIFake]:
    async with KeywordsAIFake() as fake:
        yield fake
