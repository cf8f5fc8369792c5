"""Redaction end to end: secrets sent to the daemon (a subprocess) never reach its disk, nor the remote.

Records carrying an email, a card number, an API key and a password arrive over the native route and over a vendor's
drop-in path. The raw bytes of every file the daemon writes (spool.db, its WAL, the file sink's output, its log) are
searched for the secrets while the vendor's rows wait in the spool (the vendor is down), and again after delivery
and shutdown. A marker sent beside the secrets proves the search looks where the records really are. The vendor
finally receives the redacted record, marked as such, with its missing usage and cost filled in on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.fakes import KeywordsAIFake
from tests.fakes.snippets import KW_KEY
from tests.support import Daemon, ndjson, wait_for, write_config

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
API_KEY = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0"
PASSWORD = "hunter2-correct-horse"
SECRETS = [EMAIL, CARD, CARD.replace(" ", ""), API_KEY, PASSWORD]
TEXT = f"Contact me at {EMAIL}, pay with {CARD}, my key is {API_KEY}."

REDACT = """
[redact]
builtin = ["emails", "cards", "api_keys"]
drop = ["inputs.password"]
"""


@pytest.fixture
async def kw() -> AsyncIterator[KeywordsAIFake]:
    fake = KeywordsAIFake(api_keys=(KW_KEY,))  # not started: the vendor is down, its rows wait in the spool
    yield fake
    await fake.stop()


def sinks(tmp_path: Path, kw: KeywordsAIFake) -> str:
    return f"""
[sinks.local]
type = "file"
path = "{tmp_path / "out.ndjson"}"

[sinks.kw]
type = "keywordsai"
base_url = "{kw.url}"
retry_initial_backoff = 0.05
retry_max_backoff = 0.2
"""


def written_bytes(tmp_path: Path) -> dict[str, bytes]:
    """Every file the daemon wrote, by name (the config file is ours)."""
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != "shipper.toml"}


def assert_no_secret(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret!r} found in {name}"


def kw_log(marker: str) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "prompt_messages": [{"role": "user", "content": TEXT}],
        "completion_message": {"role": "assistant", "content": f"Noted, {EMAIL}."},
        "inputs": {"password": PASSWORD, "question": "refund?"},
        "metadata": {"marker": marker},
    }


async def send(daemon: Daemon) -> None:
    auth = {"Authorization": f"Bearer {KW_KEY}"}
    native = [
        {"sink": "local", "body": {"marker": "marker-native-file", "text": TEXT, "inputs": {"password": PASSWORD}}},
        {"sink": "kw", "path": "/api/request-logs/create", "body": kw_log("marker-native-kw")},
    ]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://{daemon.http}/v1/records",
            data=ndjson(native),
            headers={**auth, "Content-Type": "application/x-ndjson"},
        ) as response:
            assert response.status == 202, await response.text()
        # The Keywords AI SDK's own path (drop-in).
        async with session.post(
            f"http://{daemon.http}/request-logs/create", json=kw_log("marker-dropin-kw"), headers=auth
        ) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == {"message": "log successful"}


async def test_redacted_text_never_reaches_the_spool_the_sink_or_the_remote(tmp_path: Path, kw: KeywordsAIFake) -> None:
    daemon = Daemon.from_config(write_config(tmp_path, sinks(tmp_path, kw), extra=REDACT))
    await daemon.start()
    out = tmp_path / "out.ndjson"
    try:
        await send(daemon)
        await wait_for(lambda: out.exists() and b"marker-native-file" in out.read_bytes())
        files = written_bytes(tmp_path)
        spool = files["spool.db"] + files.get("spool.db-wal", b"")
        # The vendor's rows are in the spool right now (its remote is down): the search looks at them.
        assert b"marker-native-kw" in spool and b"marker-dropin-kw" in spool
        assert_no_secret(files)

        line = orjson.loads(out.read_bytes().splitlines()[0])
        assert line["body"] == {
            "marker": "marker-native-file",
            "text": "Contact me at [REDACTED_EMAIL], pay with [REDACTED_CARD], my key is [REDACTED_API_KEY].",
            "inputs": {},
            "_shipper_redacted": "api_keys,cards,drop,emails",
        }

        await kw.start()
        await wait_for(lambda: len(kw.received) == 2)
        for seen in kw.received:
            assert_no_secret({seen.path: seen.raw})
            body = seen.body
            assert body["inputs"] == {"question": "refund?"}
            assert body["prompt_messages"][0]["content"].startswith("Contact me at [REDACTED_EMAIL], pay with")
            assert body["metadata"]["shipper_redacted"] == "api_keys,cards,drop,emails"
            # Enriched on the way out: the app sent no usage and no cost.
            assert body["metadata"]["shipper_estimated"] == "cost,usage"
            assert isinstance(body["prompt_tokens"], int) and body["prompt_tokens"] > 10
            assert body["cost"] > 0
        assert {seen.body["metadata"]["marker"] for seen in kw.received} == {"marker-native-kw", "marker-dropin-kw"}
    finally:
        assert await daemon.terminate() == 0
    assert_no_secret(written_bytes(tmp_path))
