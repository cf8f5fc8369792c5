"""The command line as an operator uses it: check-config, run with a bad config, status (table and JSON) with the
daemon running and stopped, and a second daemon refused on a spool that is already in use."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from shipper.config import load_config
from shipper.config.sinks import HttpSinkConfig
from shipper.spool.reader import SpoolReader, read
from tests.support import (
    Daemon,
    FakeRemote,
    free_port,
    post_items,
    run_cli,
    run_cli_async,
    unix_session,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.supervised


def http_sink(url: str = "http://127.0.0.1:9", extra: str = "") -> str:
    return f"""
[sinks.remote]
type = "http"
base_url = "{url}"
retry_initial_backoff = 0.01
retry_max_backoff = 0.05
{extra}
"""


BAD_CONFIGS = [
    pytest.param('[sinks.remote]\ntype = "http"\nbase_url = "ftp://x"\n', "sinks.remote.base_url", id="base-url"),
    pytest.param('[spool]\ndurability = "maybe"\n' + http_sink(), "spool.durability", id="durability"),
    pytest.param("[daemon]\nshoe_size = 42\n" + http_sink(), "daemon.shoe_size", id="unknown-key"),
    pytest.param('[daemon]\ndrain_timeout = "10s"\n' + http_sink(), "daemon.drain_timeout", id="duration-string"),
    pytest.param("[spool\n" + http_sink(), "not valid TOML", id="invalid-toml"),
]


def test_check_config_accepts_a_good_config_and_names_its_sinks(tmp_path: Path) -> None:
    config = write_config(tmp_path, http_sink() + '\n[sinks.archive]\ntype = "file"\npath = "out.ndjson"\n')
    code, out, err = run_cli("check-config", "--config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"config: {config} (--config)", "ok: 2 sink(s): remote, archive"]


def test_check_config_without_a_file_checks_the_built_in_defaults_and_says_so() -> None:
    code, out, _ = run_cli("check-config")
    assert code == 0
    assert out.splitlines() == [
        "config: built-in defaults (no --config, $SHIPPER_CONFIG or"
        f" {os.environ['SHIPPER_SYSTEM_CONFIG']})",  # tests/conftest.py points the system file away from /etc
        "ok: 1 sink(s): local",
    ]


def test_the_readmes_env_override_on_the_built_in_defaults_works_and_keeps_the_local_sink(tmp_path: Path) -> None:
    code, out, err = run_cli("check-config", env={"SHIPPER__SINKS__LOCAL__PATH": "out.ndjson"})
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "ok: 1 sink(s): local"
    freeplay = {
        "SHIPPER__SINKS__FREEPLAY__TYPE": "freeplay",
        "SHIPPER__SINKS__FREEPLAY__BASE_URL": "https://a.fp.ai/api",
    }
    code, out, err = run_cli("check-config", env=freeplay)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "ok: 2 sink(s): local, freeplay"


def test_config_lookup_is_flag_then_shipper_config_then_the_system_file_then_built_in(tmp_path: Path) -> None:
    files = {}
    for name in ("flag", "env", "system"):
        files[name] = tmp_path / f"{name}.toml"
        files[name].write_text(f'[sinks.{name}]\ntype = "file"\npath = "out.ndjson"\n')
    env = {"SHIPPER_CONFIG": str(files["env"]), "SHIPPER_SYSTEM_CONFIG": str(files["system"])}

    def used(*args: str, **extra: str) -> list[str]:
        code, out, err = run_cli("check-config", *args, env=extra)
        assert code == 0, err
        return out.splitlines()

    assert used("--config", str(files["flag"]), **env) == [f"config: {files['flag']} (--config)", "ok: 1 sink(s): flag"]
    assert used(**env) == [f"config: {files['env']} ($SHIPPER_CONFIG)", "ok: 1 sink(s): env"]
    system = {"SHIPPER_SYSTEM_CONFIG": env["SHIPPER_SYSTEM_CONFIG"]}
    assert used(**system) == [f"config: {files['system']} (the system configuration)", "ok: 1 sink(s): system"]
    code, _, err = run_cli("check-config", env={"SHIPPER_CONFIG": str(tmp_path / "gone.toml")})
    assert code == 2  # a named file that is missing is an error, not a fall back to the defaults
    assert err.strip() == f"shipper: cannot read config {tmp_path / 'gone.toml'}: No such file or directory"


async def test_relative_paths_in_a_config_file_resolve_against_its_directory_for_daemon_and_status(
    tmp_path: Path, remote: FakeRemote
) -> None:
    (tmp_path / "x").mkdir()
    port = free_port()
    config = tmp_path / "x" / "shipper.toml"
    listeners = f'[ingest]\nhttp = "127.0.0.1:{port}"\nunix = "shipper.sock"\n'
    config.write_text(f'{listeners}[spool]\npath = "spool.db"\n{http_sink(remote.url)}')
    daemon = Daemon(config, f"127.0.0.1:{port}", tmp_path / "x" / "shipper.sock")
    await daemon.start()  # from the repository, not from x/
    try:
        assert (tmp_path / "x" / "spool.db").exists()
        assert (tmp_path / "x" / "shipper.sock").is_socket()
        (started,) = [line for line in daemon.json_logs() if line["msg"] == "shipper started"]
        assert started["config"] == str(config)
        code, out, err = await asyncio.to_thread(run_cli, "status", "--config", "x/shipper.toml", cwd=tmp_path)
        assert code == 0, err
        assert f"spool {tmp_path / 'x' / 'spool.db'}:" in out
        assert "daemon: running" in out
        assert out.splitlines()[-1] == "config: x/shipper.toml (--config)"
        code, out, err = await asyncio.to_thread(
            run_cli, "status", "--json", cwd=tmp_path, env={"SHIPPER_CONFIG": str(config)}
        )
        assert code == 0, err
        assert orjson.loads(out)["config"] == {"path": str(config), "found_by": "$SHIPPER_CONFIG"}
    finally:
        assert await daemon.terminate() == 0


@pytest.mark.parametrize(("text", "names"), BAD_CONFIGS)
def test_check_config_exits_non_zero_naming_the_bad_key(tmp_path: Path, text: str, names: str) -> None:
    config = tmp_path / "shipper.toml"
    config.write_text(text)
    code, out, err = run_cli("check-config", "--config", str(config))
    assert code != 0
    assert names in err
    assert "Traceback" not in err
    assert out == ""


def test_check_config_of_a_missing_file_exits_non_zero_naming_it(tmp_path: Path) -> None:
    code, _, err = run_cli("check-config", "--config", str(tmp_path / "absent.toml"))
    assert code != 0
    assert "absent.toml" in err


@pytest.mark.parametrize(("text", "names"), BAD_CONFIGS[:3])
def test_run_with_a_bad_config_exits_non_zero_naming_the_key_and_touches_nothing(
    tmp_path: Path, text: str, names: str
) -> None:
    config = tmp_path / "shipper.toml"
    config.write_text(text)
    code, _, err = run_cli("run", "--config", str(config))
    assert code != 0
    assert names in err
    assert "Traceback" not in err


def test_run_refuses_an_auth_env_that_is_not_set_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, http_sink(extra='auth_env = "SHIPPER_TEST_SURELY_UNSET_TOKEN"'))
    code, _, err = run_cli("run", "--config", str(config))
    assert code != 0
    assert "sinks.remote.auth_env" in err
    assert "Traceback" not in err


def test_check_config_refuses_what_run_would_refuse_an_unset_auth_env(tmp_path: Path) -> None:
    # check-config exists so that a deploy can fail before the restart; it must not pass a config `run` rejects.
    config = write_config(tmp_path, http_sink(extra='auth_env = "SHIPPER_TEST_SURELY_UNSET_TOKEN"'))
    code, _, err = run_cli("check-config", "--config", str(config))
    assert code != 0
    assert "sinks.remote.auth_env" in err


def test_status_before_the_daemon_ever_ran_says_there_is_no_spool(tmp_path: Path) -> None:
    config = write_config(tmp_path, http_sink())
    code, _, err = run_cli("status", "--config", str(config))
    assert code != 0
    assert "no spool at" in err
    assert "Traceback" not in err


async def status(config: Path) -> tuple[dict[str, Any], str]:
    """`shipper status --json` and the table, as an operator would run them."""
    code, out, err = await run_cli_async("status", "--config", str(config), "--json")
    assert code == 0, err
    code, table, err = await run_cli_async("status", "--config", str(config))
    assert code == 0, err
    data = orjson.loads(out)
    (sink,) = data["sinks"]
    return {**data, "sink": sink}, table


def spool_counts(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data["sink"][k] for k in ("sink", "queued", "leased", "retrying", "dead_lettered")}


def table_row(table: str, sink: str) -> dict[str, str]:
    """The table's row for `sink`, cut at the header's column starts (cells may contain spaces)."""
    header, *rest = table.splitlines()
    labels = ["SINK", "QUEUED", "IN-FLIGHT", "DELIVERED/MIN", "STATE", "RETRYING", "DEAD", "OLDEST"]
    starts = [header.index(label) for label in labels]
    (line,) = [line for line in rest if line.split()[:1] == [sink]]
    bounds = [*starts[1:], None]
    return {label: line[a:b].strip() for label, a, b in zip(labels, starts, bounds, strict=True)}


def on_disk(spool: Path) -> int:
    """Every file beside the spool that holds its data: not the locks (the instance lock, the writers' turn) nor
    the directory of presence locks."""
    beside = spool.parent.glob(spool.name + "*")
    locks = (".lock", "-writer", "-writer-next")
    return sum(p.stat().st_size for p in beside if p.is_file() and not p.name.endswith(locks))


def poison_then_hold(release: asyncio.Event) -> Any:
    async def behave(request: web.Request, body: bytes) -> web.Response | None:
        if b"poison" in body:
            return web.json_response({"error": "bad"}, status=400)
        await release.wait()
        return web.json_response({"error": "later"}, status=503, headers={"Retry-After": "3600"})

    return behave


async def test_status_shows_queued_leased_retrying_dead_and_age_with_the_daemon_running_and_stopped(
    tmp_path: Path, remote: FakeRemote
) -> None:
    config = write_config(tmp_path, http_sink(remote.url), drain_timeout=1)
    spool = tmp_path / "spool.db"
    daemon = Daemon.from_config(config)
    release = asyncio.Event()
    remote.async_behaviour = poison_then_hold(release)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://{daemon.http}/v1/records"
            await post_items(session, url, [{"sink": "remote", "body": {"poison": True}}])
            await wait_for(lambda: remote.attempts == 1 and remote.in_flight == 0, timeout=10)
            posted = time.time()
            await post_items(session, url, [{"sink": "remote", "body": {"n": n}} for n in range(5)])
        await wait_for(lambda: remote.in_flight == 5, timeout=10)

        # Running, five sends held by the remote: leased.
        data, table = await status(config)
        assert spool_counts(data) == {"sink": "remote", "queued": 5, "leased": 5, "retrying": 0, "dead_lettered": 1}
        assert 0 <= data["sink"]["oldest_age"] <= time.time() - posted + 1
        assert data["daemon"] == {"running": True, "pid": daemon.proc.pid if daemon.proc else None}
        assert data["spool"]["path"] == str(spool)
        assert data["spool"]["bytes"] > 0
        row = table_row(table, "remote")
        assert (row["QUEUED"], row["IN-FLIGHT"], row["DEAD"]) == ("5", "5", "1")
        assert f"running (pid {data['daemon']['pid']})" in table
        assert f"spool {spool}:" in table

        # The remote answers 503 + Retry-After: an hour. The rows wait: retrying.
        release.set()
        await wait_for(
            lambda: read(spool, lambda s: s.retrying(time.time())) == 5,
            timeout=10,
        )
        data, table = await status(config)
        assert spool_counts(data) == {"sink": "remote", "queued": 5, "leased": 0, "retrying": 5, "dead_lettered": 1}
        row = table_row(table, "remote")
        assert (row["QUEUED"], row["IN-FLIGHT"], row["DEAD"]) == ("5", "0", "1")
        assert row["RETRYING"].startswith("for ")
        # The error has a line of its own under the table, so it is not cut to a column's width.
        (error,) = [line for line in table.splitlines() if line.startswith("last error, remote (")]
        assert "503" in error
        age_running = data["sink"]["oldest_age"]
    finally:
        assert await daemon.terminate() == 0

    # Stopped: the same picture, read from the file alone.
    data, table = await status(config)
    assert spool_counts(data) == {"sink": "remote", "queued": 5, "leased": 0, "retrying": 5, "dead_lettered": 1}
    assert data["sink"]["oldest_age"] >= age_running
    assert data["daemon"] == {"running": False, "pid": None}
    assert data["spool"]["bytes"] == on_disk(spool)
    row = table_row(table, "remote")
    assert (row["QUEUED"], row["IN-FLIGHT"], row["DEAD"]) == ("5", "0", "1")
    assert row["OLDEST"].endswith("s")  # an age, e.g. "1s"
    assert "daemon: not running" in table


async def test_status_while_running_counts_every_dead_letter_in_the_spool_not_just_this_runs(
    tmp_path: Path, remote: FakeRemote
) -> None:
    config = write_config(tmp_path, http_sink(remote.url))
    daemon = Daemon.from_config(config)
    remote.async_behaviour = poison_then_hold(asyncio.Event())
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await post_items(session, f"http://{daemon.http}/v1/records", [{"sink": "remote", "body": {"poison": 1}}])
        await wait_for(lambda: read(tmp_path / "spool.db", SpoolReader.dead_count) == 1)
    finally:
        assert await daemon.terminate() == 0
    data, _ = await status(config)
    assert data["sink"]["dead_lettered"] == 1
    await daemon.start()  # a restart: the dead letter is still in the table
    try:
        data, table = await status(config)
        assert data["daemon"]["running"]
        assert data["sink"]["dead_lettered"] == 1
        assert table_row(table, "remote")["DEAD"] == "1"
    finally:
        assert await daemon.terminate() == 0


async def test_status_of_an_empty_spool_shows_zeros_and_no_age(tmp_path: Path, remote: FakeRemote) -> None:
    config = write_config(tmp_path, http_sink(remote.url))
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        data, table = await status(config)
        assert spool_counts(data) == {"sink": "remote", "queued": 0, "leased": 0, "retrying": 0, "dead_lettered": 0}
        assert data["sink"]["oldest_age"] is None
        row = table_row(table, "remote")
        assert (row["QUEUED"], row["IN-FLIGHT"], row["DEAD"], row["OLDEST"]) == ("0", "0", "0", "-")
    finally:
        assert await daemon.terminate() == 0


async def second_daemon_refused(config: Path) -> str:
    code, _, err = await run_cli_async("run", "--config", str(config), timeout=20)
    assert code != 0
    assert "Traceback" not in err
    return err


async def test_a_second_daemon_with_the_same_config_refuses_and_leaves_the_first_serving(
    tmp_path: Path, remote: FakeRemote
) -> None:
    config = write_config(tmp_path, http_sink(remote.url))
    first = Daemon.from_config(config)
    await first.start()
    try:
        err = await second_daemon_refused(config)
        assert "another shipper is already using the spool" in err
        assert str(tmp_path / "spool.db") in err
        # The refused daemon must not have taken over (or removed) the first one's Unix socket.
        async with unix_session(first.unix) as unix:
            await post_items(unix, "http://localhost/v1/records", [{"sink": "remote", "body": {"n": 1}}])
        await wait_for(lambda: len(remote.received) == 1, timeout=10)
    finally:
        assert await first.terminate() == 0


async def test_a_second_daemon_on_the_same_spool_with_other_listeners_refuses(
    tmp_path: Path, remote: FakeRemote
) -> None:
    config = write_config(tmp_path, http_sink(remote.url))
    first = Daemon.from_config(config)
    await first.start()
    try:
        other = tmp_path / "other"
        other.mkdir()
        text = config.read_text().replace(first.http, f"127.0.0.1:{free_port()}")
        text = text.replace(str(first.unix), str(other / "other.sock"))
        (other / "shipper.toml").write_text(text)
        err = await second_daemon_refused(other / "shipper.toml")
        assert "another shipper is already using the spool" in err
        assert not (other / "other.sock").exists()
        async with aiohttp.ClientSession() as session, session.get(f"http://{first.http}/healthz") as response:
            assert response.status == 200
    finally:
        assert await first.terminate() == 0


@pytest.mark.parametrize(
    ("interval", "says"),
    [(n, f"refresh at most every 0.5 seconds, not {n}") for n in ("0", "-1", "0.1", "nan", "inf")]
    + [("soon", "'soon' is not a number of seconds")],
)
def test_status_watch_refuses_an_interval_below_the_floor_instead_of_busy_looping(
    tmp_path: Path, interval: str, says: str
) -> None:
    config = write_config(tmp_path, http_sink())
    code, out, err = run_cli("status", "--config", str(config), "--watch", interval)
    assert (code, out) == (2, "")
    assert f"shipper status: error: argument --watch: {says}" in err
    assert "Traceback" not in err


def test_version_prints_the_package_version() -> None:
    from shipper import __version__

    assert run_cli("--version") == (0, f"shipper {__version__}\n", "")


def test_check_config_print_shows_the_effective_config_with_overrides_applied_and_secrets_masked(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "kw.key"
    key_file.write_text("kw-SECRET-key\n")
    key_file.chmod(0o600)
    sinks = http_sink(extra='headers = {"X-Api-Key" = "hdr-SECRET", "X-Team" = "blue"}') + (
        f'\n[sinks.kw]\ntype = "keywordsai"\napi_key_file = "{key_file}"\n'
    )
    config = write_config(tmp_path, sinks, ingest_extra='token = "tok-SECRET"')
    env = {"SHIPPER__SINKS__REMOTE__TIMEOUT": "7", "SHIPPER__INGEST__UNIX_MODE": "0600"}
    code, out, err = run_cli("check-config", "--config", str(config), "--print", env=env)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"# config: {config} (--config), with every SHIPPER__* override applied"
    assert "SECRET" not in out
    assert f'api_key_file = "{key_file}"' in out  # where a key lives is not a secret
    printed = tmp_path / "printed.toml"
    printed.write_text(out)

    again, original = load_config(printed, {}), load_config(config, env)
    masked: Any = {"ingest": {"token"}, "sinks": {"remote": {"headers"}}}
    assert again.model_dump(exclude=masked) == original.model_dump(exclude=masked)
    remote = again.sinks["remote"]
    assert isinstance(remote, HttpSinkConfig)
    assert remote.headers == {"X-Api-Key": "********", "X-Team": "blue"}
    assert (again.ingest.unix_mode, remote.timeout) == (0o600, 7.0)
