"""`shipper dlq` against a running daemon: list (text, JSON, by sink, since), show, replay by id and by sink (back
in original order, picked up by the daemon within about a second, delivered once), progress for big replays, purge,
and clear errors for bad ids and bad arguments. No API key ever shows in what the commands print."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from shipper.spool.reader import SpoolReader, read
from tests.support import Daemon, FakeRemote, post_items, run_cli_async, wait_for, write_config

APP_KEY = "kw-app-key-SECRET-5e8d21"
SINK_KEY = "kw-sink-key-SECRET-93c4aa"
REMOTE_SAYS = "field 'n' is not acceptable here"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Refusing:
    """The remote's behaviour: 400 for bodies marked poison while `refuse` is on, otherwise accept."""

    def __init__(self) -> None:
        self.refuse = True

    def __call__(self, request: web.Request, body: bytes) -> web.Response | None:
        if self.refuse and b"poison" in body:
            return web.json_response({"error": REMOTE_SAYS}, status=400)
        return None


def sinks_toml(remote: FakeRemote, key_file: Path) -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{remote.url}"
concurrency = 16
retry_initial_backoff = 0.02
retry_max_backoff = 0.1

[sinks.other]
type = "http"
base_url = "{remote.url}"
concurrency = 1
retry_initial_backoff = 0.02
retry_max_backoff = 0.1

[sinks.kw]
type = "keywordsai"
base_url = "{remote.url}"
api_key_file = "{key_file}"
retry_initial_backoff = 0.02
retry_max_backoff = 0.1
"""


async def start(tmp_path: Path, remote: FakeRemote) -> tuple[Daemon, Refusing]:
    key_file = tmp_path / "kw.key"
    key_file.write_text(SINK_KEY + "\n")
    key_file.chmod(0o600)
    refusing = Refusing()
    remote.behaviour = refusing
    daemon = Daemon.from_config(write_config(tmp_path, sinks_toml(remote, key_file)))
    await daemon.start()
    return daemon, refusing


def dead_count(tmp_path: Path, sink: str | None = None) -> int:
    if sink is None:
        return read(tmp_path / "spool.db", SpoolReader.dead_count)
    return read(tmp_path / "spool.db", lambda s: s.dead_count(sink))


async def make_dead_letters(daemon: Daemon, tmp_path: Path) -> None:
    """remote: 4 poison rows of one key (n 0-3) between good ones; other: 3 poison rows (n 100-102);
    kw: one poison log sent with the app's key. 8 dead letters."""
    async with aiohttp.ClientSession() as session:
        url = f"http://{daemon.http}/v1/records"
        items: list[dict[str, Any]] = []
        for n in range(4):
            items.append({"sink": "remote", "path": "/ingest", "key": "conv", "body": {"n": n, "poison": True}})
            items.append({"sink": "remote", "path": "/ingest", "body": {"n": 50 + n}})
        items += [{"sink": "other", "path": "/ingest", "body": {"n": n, "poison": True}} for n in (100, 101, 102)]
        await post_items(session, url, items)
        kw = {"sink": "kw", "path": "/api/request-logs/create/", "body": {"n": 200, "poison": True}}
        async with session.post(
            url,
            data=orjson.dumps(kw),
            headers={"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 202, await response.text()
    await wait_for(lambda: dead_count(tmp_path) == 8, timeout=20)


async def dlq(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    return await run_cli_async("dlq", args[0], "--config", str(daemon.config), *args[1:])


async def dlq_json(daemon: Daemon, *args: str) -> list[dict[str, Any]]:
    code, out, err = await dlq(daemon, "list", "--json", *args)
    assert code == 0, err
    rows: list[dict[str, Any]] = orjson.loads(out)
    return rows


def arrived(remote: FakeRemote) -> list[int]:
    return [body["n"] for body in remote.bodies()]


async def test_dlq_list_and_show_describe_each_dead_letter_with_the_daemon_running(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon, _ = await start(tmp_path, remote)
    try:
        await make_dead_letters(daemon, tmp_path)

        code, out, err = await dlq(daemon, "list")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:4] == ["ID", "SINK", "FAILED", "STATUS"]
        assert lines[-1] == "8 dead letter(s)"
        body_lines = lines[1:-1]
        assert len(body_lines) == 8
        assert sum(" remote " in line for line in body_lines) == 4
        assert all(" 400 " in line and "rejected by the remote" in line for line in body_lines)
        assert sum("POST /ingest" in line for line in body_lines) == 7

        rows = await dlq_json(daemon)
        assert len(rows) == 8
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        assert Counter(r["sink"] for r in rows) == {"remote": 4, "other": 3, "kw": 1}
        assert all("body" not in r for r in rows)  # bodies only with `show`
        first = rows[0]
        assert {k: first[k] for k in ("sink", "key", "method", "path", "status", "attempts")} == {
            "sink": "remote",
            "key": "conv",
            "method": "POST",
            "path": "/ingest",
            "status": 400,
            "attempts": 1,
        }
        assert REMOTE_SAYS in first["response"]
        assert first["reason"] == "rejected by the remote"  # the remote's answer is in `response`, once
        assert RFC3339_UTC.fullmatch(first["failed_at"]) and RFC3339_UTC.fullmatch(first["created_at"])
        assert time.time() - 60 < datetime.fromisoformat(first["failed_at"]).timestamp() <= time.time()
        failed_shown = first["failed_at"][:19] + "Z"  # the table shows the same time, to the second
        assert any(line.split()[:3] == [str(first["id"]), "remote", failed_shown] for line in body_lines)

        assert [r["sink"] for r in await dlq_json(daemon, "--sink", "other")] == ["other"] * 3
        assert len(await dlq_json(daemon, "--since", "1h")) == 8
        assert len(await dlq_json(daemon, "--since", (datetime.now() - timedelta(hours=1)).isoformat())) == 8
        assert await dlq_json(daemon, "--since", (datetime.now() + timedelta(hours=1)).isoformat()) == []
        assert len(await dlq_json(daemon, "--sink", "remote", "--since", "10m")) == 4
        code, _, err = await dlq(daemon, "list", "--since", "last tuesday")
        assert code == 2
        assert "last tuesday" in err and "Traceback" not in err

        code, out, err = await dlq(daemon, "show", str(first["id"]))
        assert code == 0, err
        shown = orjson.loads(out)
        assert shown["id"] == first["id"]
        assert shown["body"] == {"n": 0, "poison": True}
        assert shown["status"] == 400
        assert REMOTE_SAYS in shown["response"]
        assert shown["reason"] == "rejected by the remote"
        assert out.count(REMOTE_SAYS) == 1  # said once, in `response`
        assert (shown["failed_at"], shown["created_at"]) == (first["failed_at"], first["created_at"])

        (kw,) = [r for r in rows if r["sink"] == "kw"]
        code, out, err = await dlq(daemon, "show", str(kw["id"]))
        assert code == 0, err
        assert orjson.loads(out)["body"] == {"n": 200, "poison": True}
        for text in (out, orjson.dumps(rows).decode()):
            assert APP_KEY not in text and SINK_KEY not in text and "SECRET" not in text
    finally:
        await daemon.ensure_stopped()


async def test_dlq_replay_by_id_and_by_sink_requeues_in_original_order_and_the_daemon_delivers_each_once(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon, refusing = await start(tmp_path, remote)
    try:
        await make_dead_letters(daemon, tmp_path)
        rows = await dlq_json(daemon)
        ids = {r["sink"]: [x["id"] for x in rows if x["sink"] == r["sink"]] for r in rows}
        assert sorted(arrived(remote)) == [50, 51, 52, 53]
        refusing.refuse = False  # the remote has been fixed

        # One by id: the running daemon notices it within about a second (it polls when idle).
        code, out, err = await dlq(daemon, "replay", str(ids["other"][1]))
        assert code == 0, err
        moved, summary = out.splitlines()
        old, new = re.fullmatch(r"dead letter (\d+) -> row (\d+)", moved).groups()  # type: ignore[union-attr]
        assert int(old) == ids["other"][1] and int(new) > max(r["id"] for r in rows)
        assert summary == "replayed 1 dead letter(s) into the queue"
        replayed_at = time.monotonic()
        await wait_for(lambda: 101 in arrived(remote), timeout=10)
        assert time.monotonic() - replayed_at < 3
        assert dead_count(tmp_path, "other") == 2

        # The vendor row goes out again with the key the app originally sent.
        code, _, err = await dlq(daemon, "replay", str(ids["kw"][0]))
        assert code == 0, err
        await wait_for(lambda: 200 in arrived(remote), timeout=10)
        (kw_request,) = [r for r in remote.received if r.json()["n"] == 200]
        assert kw_request.headers["Authorization"] == f"Bearer {APP_KEY}"
        assert kw_request.path == "/api/request-logs/create/"

        # A whole sink: back in their original order (one key: one at a time, in id order).
        code, out, err = await dlq(daemon, "replay", "--sink", "remote")
        assert code == 0, err
        assert "replayed 4 " in out
        await wait_for(lambda: all(n in arrived(remote) for n in range(4)), timeout=10)
        assert [n for n in arrived(remote) if n < 4] == [0, 1, 2, 3]
        assert dead_count(tmp_path, "remote") == 0

        # The rest of `other` (concurrency 1, no key): also in original order.
        code, out, err = await dlq(daemon, "replay", "--sink", "other", "--since", "1h")
        assert code == 0, err
        assert "replayed 2 " in out
        await wait_for(lambda: {100, 102} <= set(arrived(remote)), timeout=10)
        assert [n for n in arrived(remote) if n in (100, 102)] == [100, 102]

        assert dead_count(tmp_path) == 0
        assert await dlq_json(daemon) == []
        await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.waiting) == 0, timeout=10)
        # Every record reached the remote exactly once.
        assert Counter(arrived(remote)) == Counter([0, 1, 2, 3, 50, 51, 52, 53, 100, 101, 102, 200])
    finally:
        await daemon.ensure_stopped()


async def test_dlq_replay_of_more_than_500_rows_reports_progress_on_stderr_and_delivers_each_once(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon, refusing = await start(tmp_path, remote)
    total = 1200
    try:
        async with aiohttp.ClientSession() as session:
            # Eight keys: the replayed rows must come back in order within each key, across the 500-row chunks.
            items = [
                {"sink": "remote", "path": "/ingest", "key": f"k{n % 8}", "body": {"n": n, "poison": True}}
                for n in range(total)
            ]
            await post_items(session, f"http://{daemon.http}/v1/records", items)
        await wait_for(lambda: dead_count(tmp_path) == total, timeout=60)
        refusing.refuse = False

        code, out, err = await dlq(daemon, "replay", "--sink", "remote")
        assert code == 0, err
        assert f"replayed {total} " in out
        progress = [line for line in err.splitlines() if line.startswith("replayed ")]
        assert progress == ["replayed 500/1200", "replayed 1000/1200", "replayed 1200/1200"]

        await wait_for(lambda: len(remote.received) == total, timeout=60)
        assert Counter(arrived(remote)) == Counter(range(total))
        for key in range(8):
            chain = [n for n in arrived(remote) if n % 8 == key]
            assert chain == sorted(chain), f"key k{key} arrived out of order"
        assert dead_count(tmp_path) == 0
    finally:
        await daemon.ensure_stopped()


async def test_dlq_replay_of_a_few_rows_prints_no_progress(tmp_path: Path, remote: FakeRemote) -> None:
    daemon, refusing = await start(tmp_path, remote)
    try:
        await make_dead_letters(daemon, tmp_path)
        refusing.refuse = False
        others = [r["id"] for r in await dlq_json(daemon, "--sink", "other")]
        code, out, err = await dlq(daemon, "replay", "--sink", "other")
        assert code == 0, err
        *moved, summary = out.splitlines()
        pairs = [re.fullmatch(r"dead letter (\d+) -> row (\d+)", line) for line in moved]
        assert [int(p.group(1)) for p in pairs if p] == others
        news = [int(p.group(2)) for p in pairs if p]
        assert news == sorted(news) and len(set(news)) == 3  # new ids, in the original order
        assert summary == "replayed 3 dead letter(s) into the queue"
        assert err == ""
    finally:
        await daemon.ensure_stopped()


async def test_dlq_purge_older_than_and_all_and_refuses_to_guess_without_either(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon, _ = await start(tmp_path, remote)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://{daemon.http}/v1/records"

            async def poison(sink: str, *numbers: int) -> None:
                items = [{"sink": sink, "path": "/ingest", "body": {"n": n, "poison": True}} for n in numbers]
                before = dead_count(tmp_path)
                await post_items(session, url, items)
                await wait_for(lambda: dead_count(tmp_path) == before + len(numbers), timeout=20)

            await poison("remote", 1, 2)
            await poison("remote", 3)
            await poison("other", 4)
        # The first two failed an hour ago, as far as the spool knows: their age is the point, and no CLI start,
        # however slow under load, makes the later ones half as old.
        first_two = "SELECT id FROM dead_letters ORDER BY id LIMIT 2"
        with contextlib.closing(sqlite3.connect(tmp_path / "spool.db", timeout=5)) as conn, conn:
            conn.execute(f"UPDATE dead_letters SET failed_at = failed_at - 3600 WHERE id IN ({first_two})")

        # Neither --older-than nor --all: refused, with the way out named; nothing deleted.
        code, out, err = await dlq(daemon, "purge")
        assert code == 2
        assert "--older-than" in err and "--all" in err
        assert "Traceback" not in err
        assert dead_count(tmp_path) == 4
        code, _, err = await dlq(daemon, "purge", "--older-than", "a while")
        assert code == 2
        assert "a while" in err and "Traceback" not in err
        assert dead_count(tmp_path) == 4

        code, out, err = await dlq(daemon, "purge", "--older-than", "1800s")
        assert code == 0, err
        assert out.strip() == "purged 2 dead letter(s)"
        assert sorted(r["body"]["n"] for r in await shown_all(daemon)) == [3, 4]

        code, out, err = await dlq(daemon, "purge", "--all", "--sink", "other")
        assert code == 0, err
        assert out.strip() == "purged 1 dead letter(s)"
        assert [r["sink"] for r in await dlq_json(daemon)] == ["remote"]

        code, out, err = await dlq(daemon, "purge", "--all")
        assert code == 0, err
        assert out.strip() == "purged 1 dead letter(s)"
        assert dead_count(tmp_path) == 0

        # The daemon is unharmed: it still takes and delivers records.
        async with aiohttp.ClientSession() as session:
            await post_items(session, url, [{"sink": "remote", "path": "/ingest", "body": {"n": 9}}])
        await wait_for(lambda: 9 in arrived(remote), timeout=10)
    finally:
        await daemon.ensure_stopped()


async def shown_all(daemon: Daemon) -> list[dict[str, Any]]:
    out = []
    for row in await dlq_json(daemon):
        code, text, err = await dlq(daemon, "show", str(row["id"]))
        assert code == 0, err
        out.append(orjson.loads(text))
    return out


async def test_dlq_show_and_replay_of_an_id_that_is_not_a_dead_letter_fail_clearly_with_exit_2(
    tmp_path: Path, remote: FakeRemote
) -> None:
    daemon, _ = await start(tmp_path, remote)
    try:
        await make_dead_letters(daemon, tmp_path)
        for command in ("show", "replay"):
            code, out, err = await dlq(daemon, command, "999999")
            assert code == 2, f"dlq {command} 999999 exited {code}: {out!r} {err!r}"
            assert "999999" in err
            assert "Traceback" not in err
            code, _, err = await dlq(daemon, command, "abc")
            assert code == 2
            assert "abc" in err
        assert dead_count(tmp_path) == 8  # nothing was replayed
    finally:
        await daemon.ensure_stopped()


async def test_dlq_with_a_sink_in_neither_the_config_nor_the_spool_says_so(tmp_path: Path, remote: FakeRemote) -> None:
    daemon, _ = await start(tmp_path, remote)
    try:
        await make_dead_letters(daemon, tmp_path)
        for command in (("list",), ("replay",), ("purge", "--all")):
            code, out, err = await dlq(daemon, *command, "--sink", "nonesuch")
            assert (code, out) == (2, ""), command
            spool = tmp_path / "spool.db"
            assert err == f"shipper: no sink 'nonesuch' in the config (remote, other, kw) or in the spool {spool}\n"
        assert dead_count(tmp_path) == 8
    finally:
        await daemon.ensure_stopped()


async def test_dlq_list_keeps_a_long_requests_tail_and_a_short_one_whole(tmp_path: Path, remote: FakeRemote) -> None:
    daemon, _ = await start(tmp_path, remote)
    long_path = (
        "/v2/projects/0b9c2a41-8a0e-4f7e-9d3b-1c2d3e4f5a6b/sessions/5f1e7d2c-0a9b/completions/c0ffee-77/feedback"
    )
    try:
        async with aiohttp.ClientSession() as session:
            items = [{"sink": "remote", "path": p, "body": {"poison": True}} for p in ("/short", long_path)]
            await post_items(session, f"http://{daemon.http}/v1/records", items)
        await wait_for(lambda: dead_count(tmp_path) == 2, timeout=20)
        code, out, err = await dlq(daemon, "list")
        assert code == 0, err
        short, long = out.splitlines()[1:3]
        assert " POST /short " in short
        (request,) = [cell for cell in long.split("  ") if cell.startswith("POST /v2/")]
        assert request.endswith("/completions/c0ffee-77/feedback") and "..." in request
        assert len(request) == 64
    finally:
        await daemon.ensure_stopped()
