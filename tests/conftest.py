from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes import FreeplayFake, HumanloopFake, KeywordsAIFake
from tests.fakes.snippets import close_freeplay_session
from tests.jetstream import NatsCluster
from tests.support import FakeRemote


@pytest.fixture(autouse=True)
def no_host_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hermetic config lookup: a real /etc/shipper/shipper.toml or $SHIPPER_CONFIG on this machine must not change
    what a test's `shipper` command (or the daemon it starts) reads."""
    monkeypatch.setenv("SHIPPER_SYSTEM_CONFIG", str(tmp_path_factory.getbasetemp() / "no-system-config.toml"))
    monkeypatch.delenv("SHIPPER_CONFIG", raising=False)


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


# -- a real NATS JetStream cluster (tests/jetstream.py) -----------------------------------------------------------


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """Three JetStream nodes on 127.0.0.1, stopped (kill -9) when the test ends, whatever it did to them."""
    async with NatsCluster(tmp_path / "nats") as cluster:
        yield cluster
