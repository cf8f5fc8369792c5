"""A vendor refusing a key (401) is about the credential, not the record. Refused with the sink's own key, the rows
are held (nothing dead-lettered), the sink's state reads `auth_failed` with the error beside it, a metric counts it,
one line is logged; a fixed key file and a reload deliver them. Refused with the key the app sent, the rows are
dead-lettered with the reason `auth`, and `dlq replay --api-key-env` sends them again with a good key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shipper.spool.reader import SpoolReader, read
from tests.fakes import KeywordsAIFake
from tests.fakes.rig import dead_letters, sink_toml
from tests.support import (
    Daemon,
    metric,
    run_cli_async,
    scrape,
    wait_for,
    wait_for_metrics,
    write_config,
)

GOOD_KEY = "kw-good-key-SECRET-5d1c"
BAD_KEY = "kw-bad-key-SECRET-91fe"
CREATE = "/api/request-logs/create/"


def authorizations(fake: KeywordsAIFake) -> list[str | None]:
    """The key each request that reached the fake carried, in order (accepted or not)."""
    return [seen.headers.get("Authorization") for seen in fake.attempts]


async def status_json(config: Path) -> dict[str, Any]:
    code, out, err = await run_cli_async("status", "--json", "--config", str(config))
    assert code == 0, err
    view: dict[str, Any] = orjson.loads(out)
    return next(s for s in view["sinks"] if s["sink"] == "kw")


async def test_a_refused_sink_key_holds_the_rows_loudly_until_a_fixed_key_file_and_a_reload(tmp_path: Path) -> None:
    key_file = tmp_path / "kw.key"
    key_file.write_text(BAD_KEY + "\n")
    async with KeywordsAIFake(api_keys=(GOOD_KEY,)) as fake:
        config = write_config(tmp_path, sink_toml("kw", "keywordsai", fake.url, key_file))
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                base = f"http://{daemon.http}"
                for n in range(3):  # no key from the app: the sink's own travels
                    async with session.post(base + CREATE, json={"n": n}) as response:
                        assert response.status == 200
                samples = await wait_for_metrics(
                    session, base, lambda s: (metric(s, "shipper_sink_auth_failures_total", sink="kw") or 0) >= 1, 20
                )
                assert metric(samples, "shipper_sink_state", sink="kw", state="auth_failed") == 1
                assert authorizations(fake)[0] == f"Bearer {BAD_KEY}"

                entry = await status_json(config)
                assert entry["state"] == "auth_failed"
                assert "401" in entry["last_error"] and "invalid or missing api key" in entry["last_error"]
                # Held, not dead-lettered: every row is still queued.
                assert (entry["queued"], entry["dead_lettered"]) == (3, 0)
                code, table, err = await run_cli_async("status", "--config", str(config))
                assert code == 0, err
                (row,) = [line for line in table.splitlines() if line.startswith("kw ")]
                assert "auth_failed" in row
                assert "401" in table  # the error is shown, not blanked
                await daemon.wait_for_log("refused the sink's API key")

                key_file.write_text(GOOD_KEY + "\n")
                daemon.sighup()  # the sink is unchanged in the config, but its key file is read again
                await wait_for(lambda: len(fake.logs) == 3, timeout=20)
                assert set(authorizations(fake)[-3:]) == {f"Bearer {GOOD_KEY}"}
                await wait_for_metrics(
                    session, base, lambda s: metric(s, "shipper_sink_state", sink="kw", state="up") == 1, 10
                )
                text, _ = await scrape(session, base)
            assert read(tmp_path / "spool.db", SpoolReader.dead_count) == 0
            assert await daemon.terminate() == 0
        finally:
            await daemon.ensure_stopped()
    logs = daemon.logs()
    # One line while it lasted (the throttle folds repeats), and no key anywhere.
    assert logs.count("refused the sink's API key") == 1
    for secret in (GOOD_KEY, BAD_KEY, "SECRET"):
        assert secret not in logs and secret not in text and secret not in table


async def test_a_refused_app_key_is_dead_lettered_as_auth_and_replayed_with_a_good_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "kw.key"
    key_file.write_text("kw-sink-key-unused\n")
    async with KeywordsAIFake(api_keys=(GOOD_KEY,)) as fake:
        config = write_config(tmp_path, sink_toml("kw", "keywordsai", fake.url, key_file))
        daemon = Daemon.from_config(config)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                base = f"http://{daemon.http}"
                headers = {"Authorization": f"Bearer {BAD_KEY}"}
                async with session.post(base + CREATE, json={"n": 1}, headers=headers) as response:
                    assert response.status == 200  # the SDK call succeeds: the record is committed
                await wait_for(lambda: len(dead_letters(tmp_path / "spool.db")) == 1, timeout=20)
                (dead,) = dead_letters(tmp_path / "spool.db")
                assert dead.status == 401
                assert dead.reason.startswith("auth: the remote refused the API key the app sent")
                samples = await wait_for_metrics(
                    session, base, lambda s: metric(s, "shipper_sink_auth_failures_total", sink="kw") == 1, 10
                )
                # Other apps' keys may be good: the sink itself carries on.
                assert metric(samples, "shipper_sink_state", sink="kw", state="up") == 1
                await daemon.wait_for_log("refused the API key the app sent")

                code, out, err = await run_cli_async(
                    "dlq", "replay", "--api-key-env", "KW_FIXED", "--config", str(config)
                )
                assert (code, out) == (2, "")
                assert err.strip() == "shipper: --api-key-env: environment variable KW_FIXED is not set"

                monkeypatch.setenv("KW_FIXED", GOOD_KEY)
                code, out, err = await run_cli_async(
                    "dlq", "replay", "--api-key-env", "KW_FIXED", "--config", str(config)
                )
                assert code == 0, err
                assert "replayed 1 dead letter(s)" in out and "$KW_FIXED" in out
                assert GOOD_KEY not in out + err
                await wait_for(lambda: len(fake.logs) == 1, timeout=20)
            # Sent once with the app's refused key, then once with the key the replay was given.
            assert authorizations(fake) == [f"Bearer {BAD_KEY}", f"Bearer {GOOD_KEY}"]
            assert dead_letters(tmp_path / "spool.db") == []
            assert await daemon.terminate() == 0
        finally:
            await daemon.ensure_stopped()
    for secret in (GOOD_KEY, BAD_KEY):
        assert secret not in daemon.logs()
