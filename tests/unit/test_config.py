"""load_config: the defaults, the shipped default file, every bad config named by its key, and env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipper.config import Config, FileSinkConfig, HttpSinkConfig, load_config
from shipper.errors import ConfigError
from tests.support import REPO

HTTP_SINK = """
[sinks.remote]
type = "http"
base_url = "http://127.0.0.1:9/api/"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shipper.toml"
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ or {})
    return str(caught.value)


def test_no_file_gives_the_documented_defaults() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.daemon.drain_timeout == 10.0
    assert config.ingest.http == "127.0.0.1:8790"
    assert config.ingest.unix == "var/shipper.sock"
    assert config.ingest.unix_mode == 0o660
    assert config.ingest.max_body_bytes == 5 * 1024 * 1024
    assert config.spool.path == Path("var/spool.db")
    assert config.spool.durability == "fsync"
    # The default forwards to a file, so `make run` works with no account anywhere.
    (name,) = config.sinks
    sink = config.sinks[name]
    assert isinstance(sink, FileSinkConfig)
    assert sink.retry_max_backoff == 30.0
    assert sink.max_attempts is None
    assert sink.max_age is None


def test_the_shipped_config_file_equals_the_built_in_defaults() -> None:
    # config/shipper.toml documents the defaults; if it drifts from config.py one of them is lying.
    assert load_config(REPO / "config" / "shipper.toml", {}) == load_config(None, {})


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}) == Config()


def test_a_full_http_sink_config_loads_with_durations_in_seconds(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            HTTP_SINK
            + """
batch = true
batch_max_records = 500
batch_timeout = 0.25
retry_initial_backoff = 0.1
retry_max_backoff = 5
max_attempts = 10
max_age = 3600
concurrency = 4
auth_env = "REMOTE_TOKEN"
""",
        ),
        {},
    )
    sink = config.sinks["remote"]
    assert isinstance(sink, HttpSinkConfig)
    assert sink.base_url == "http://127.0.0.1:9/api"  # trailing slash dropped so paths join cleanly
    assert (sink.batch, sink.batch_max_records, sink.batch_timeout) == (True, 500, 0.25)
    assert (sink.retry_initial_backoff, sink.retry_max_backoff) == (0.1, 5.0)
    assert (sink.max_attempts, sink.max_age, sink.concurrency) == (10, 3600.0, 4)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[sinks.remote]\ntype = "http"\nbase_url = "ftp://x"\n', "sinks.remote.http.base_url"),
        ('[sinks.remote]\ntype = "http"\nbase_url = "http://user:pw@x"\n', "sinks.remote.http.base_url"),
        ('[sinks.remote]\ntype = "http"\n', "sinks.remote.http.base_url"),  # missing
        ('[spool]\ndurability = "sometimes"\n', "spool.durability"),
        ("[spool]\nlease_timeout = 0\n", "spool.lease_timeout"),
        ("[daemon]\nbogus = 1\n", "daemon.bogus"),  # an unknown key
        ("[bogus]\nx = 1\n", "bogus"),  # an unknown section
        (HTTP_SINK + "colour = 'blue'\n", "sinks.remote.http.colour"),
        ('[daemon]\ndrain_timeout = "10s"\n', "daemon.drain_timeout"),  # durations are numbers of seconds
        ("[daemon]\ndrain_timeout = -1\n", "daemon.drain_timeout"),
        ('[daemon]\nlog_level = "loud"\n', "daemon.log_level"),
        ('[ingest]\nhttp = "localhost"\n', "ingest.http"),
        ('[ingest]\nhttp = "127.0.0.1:99999"\n', "ingest.http"),
        ("[ingest]\nmax_body_bytes = 0\n", "ingest.max_body_bytes"),
        ('[ingest]\nhttp = ""\nunix = ""\n', "ingest.http"),  # nothing would listen
        (HTTP_SINK + "concurrency = 0\n", "sinks.remote.http.concurrency"),
        (HTTP_SINK + "retry_initial_backoff = 5\nretry_max_backoff = 1\n", "retry_initial_backoff"),
        (HTTP_SINK + "max_attempts = 0\n", "sinks.remote.http.max_attempts"),
        (HTTP_SINK + 'auth_env = "A"\nauth_file = "/x"\n', "auth_env"),
        ('[sinks.remote]\nbase_url = "http://x"\n', "sinks.remote"),  # no type
        ('[sinks.remote]\ntype = "kafka"\n', "sinks.remote"),
        ('[sinks."bad name"]\ntype = "file"\npath = "x"\n', "bad name"),
        ("[sinks]\n", "sinks"),  # no sink at all
    ],
)
def test_a_bad_config_is_a_config_error_naming_the_key(tmp_path: Path, text: str, names: str) -> None:
    message = config_error(tmp_path, text)
    assert names in message


def test_invalid_toml_is_a_config_error_naming_the_file_and_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[daemon]\ndrain_timeout = 10\n[ingest\nhttp = "x"\n')
    assert "not valid TOML" in message
    assert "shipper.toml" in message
    assert "line 3" in message


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*nope\.toml"):
        load_config(tmp_path / "nope.toml", {})


def test_env_overrides_a_default(tmp_path: Path) -> None:
    config = load_config(None, {"SHIPPER__INGEST__HTTP": "127.0.0.1:9999"})
    assert config.ingest.http == "127.0.0.1:9999"


def test_env_overrides_a_value_from_the_file_and_numbers_are_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, '[ingest]\nhttp = "127.0.0.1:1111"\n[daemon]\ndrain_timeout = 10\n' + HTTP_SINK)
    environ = {
        "SHIPPER__INGEST__HTTP": "127.0.0.1:2222",
        "SHIPPER__DAEMON__DRAIN_TIMEOUT": "3",
        "SHIPPER__SINKS__REMOTE__CONCURRENCY": "2",
        "SHIPPER__INGEST__UNIX": "",  # switch the socket off
        "OTHER__INGEST__HTTP": "ignored",
    }
    config = load_config(path, environ)
    assert config.ingest.http == "127.0.0.1:2222"
    assert config.ingest.unix == ""
    assert config.daemon.drain_timeout == 3.0
    assert config.sinks["remote"].concurrency == 2


def test_a_bad_env_override_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"ingest\.http"):
        load_config(None, {"SHIPPER__INGEST__HTTP": "nope"})


def test_an_env_override_below_a_scalar_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    # A typo like SHIPPER__SPOOL__PATH__X, with spool.path set in the file, must be reported as a bad config.
    path = write(tmp_path, '[spool]\npath = "x.db"\n')
    with pytest.raises(ConfigError, match=r"spool\.path|SHIPPER__SPOOL__PATH__X"):
        load_config(path, {"SHIPPER__SPOOL__PATH__X": "1"})
