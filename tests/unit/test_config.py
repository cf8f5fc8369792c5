"""load_config: the defaults, the shipped default file, every bad config named by file, line, key or variable, env
overrides merged key by key and read by type, relative paths, and where the config is looked up."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipper.config import (
    Config,
    FileSinkConfig,
    HttpSinkConfig,
    IngestConfig,
    JetStreamSinkConfig,
    SpoolConfig,
    VendorSinkConfig,
    load_config,
)
from shipper.configfile import SYSTEM_CONFIG, ConfigSource, find_config, slot
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
    # config/shipper.toml documents the defaults; if it drifts from config.py one of them is lying. Its relative
    # paths are read against its own directory, the defaults' against the working directory.
    shipped, default = load_config(REPO / "config" / "shipper.toml", {}), load_config(None, {})
    here = REPO / "config"
    assert shipped.spool.path == here / default.spool.path
    assert shipped.ingest.unix == str(here / default.ingest.unix)
    local, default_local = shipped.sinks["local"], default.sinks["local"]
    assert isinstance(local, FileSinkConfig) and isinstance(default_local, FileSinkConfig)
    assert local.path == here / default_local.path
    relocated = shipped.model_copy(
        update={
            "spool": shipped.spool.model_copy(update={"path": default.spool.path}),
            "ingest": shipped.ingest.model_copy(update={"unix": default.ingest.unix}),
            "sinks": {"local": local.model_copy(update={"path": default_local.path})},
        }
    )
    assert relocated == default


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
        ('[sinks.remote]\ntype = "http"\nbase_url = "ftp://x"\n', "sinks.remote.base_url"),
        ('[sinks.remote]\ntype = "http"\nbase_url = "http://user:pw@x"\n', "sinks.remote.base_url"),
        ('[sinks.remote]\ntype = "http"\n', "sinks.remote.base_url"),  # missing
        ('[spool]\ndurability = "sometimes"\n', "spool.durability"),
        ("[spool]\nlease_timeout = 0\n", "spool.lease_timeout"),
        ("[daemon]\nbogus = 1\n", "daemon.bogus"),  # an unknown key
        ("[bogus]\nx = 1\n", "bogus"),  # an unknown section
        (HTTP_SINK + "colour = 'blue'\n", "sinks.remote.colour"),
        ('[daemon]\ndrain_timeout = "10s"\n', "daemon.drain_timeout"),  # durations are numbers of seconds
        ("[daemon]\ndrain_timeout = -1\n", "daemon.drain_timeout"),
        ('[daemon]\nlog_level = "loud"\n', "daemon.log_level"),
        ('[ingest]\nhttp = "localhost"\n', "ingest.http"),
        ('[ingest]\nhttp = "127.0.0.1:99999"\n', "ingest.http"),
        ("[ingest]\nmax_body_bytes = 0\n", "ingest.max_body_bytes"),
        ('[ingest]\nhttp = ""\nunix = ""\n', "ingest.http"),  # nothing would listen
        (HTTP_SINK + "concurrency = 0\n", "sinks.remote.concurrency"),
        (HTTP_SINK + "retry_initial_backoff = 5\nretry_max_backoff = 1\n", "retry_initial_backoff"),
        (HTTP_SINK + "max_attempts = 0\n", "sinks.remote.max_attempts"),
        (HTTP_SINK + 'auth_env = "A"\nauth_file = "/x"\n', "auth_env"),
        ('[sinks.remote]\nbase_url = "http://x"\n', "line 1: sinks.remote.type: required, one of file, http,"),
        ('[sinks.remote]\ntype = "kafka"\n', "line 2: sinks.remote.type: 'kafka' is not one of file,"),
        ('[sinks."bad name"]\ntype = "file"\npath = "x"\n', "bad name"),
        ("[sinks]\n", "sinks"),  # no sink at all
    ],
)
def test_a_bad_config_is_a_config_error_naming_the_key(tmp_path: Path, text: str, names: str) -> None:
    message = config_error(tmp_path, text)
    assert names in message
    assert message.startswith(f"invalid config {tmp_path / 'shipper.toml'}: ")
    assert "Value error" not in message and "Input should" not in message


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


# -- environment overrides merge key by key (issue 9, item 1) ----------------------------------------------------


def test_an_env_override_of_a_built_in_sink_key_merges_into_that_sink() -> None:
    config = load_config(None, {"SHIPPER__SINKS__LOCAL__PATH": "out.ndjson", "SHIPPER__SINKS__LOCAL__FSYNC": "false"})
    (local,) = config.sinks.values()
    assert isinstance(local, FileSinkConfig)
    assert (local.path, local.fsync) == (Path("out.ndjson"), False)


def test_an_env_sink_on_the_defaults_is_added_beside_the_built_in_local_sink() -> None:
    config = load_config(
        None,
        {
            "SHIPPER__SINKS__FREEPLAY__API_KEY_ENV": "FREEPLAY_API_KEY",  # read before the TYPE that decides its model
            "SHIPPER__SINKS__FREEPLAY__TYPE": "freeplay",
            "SHIPPER__SINKS__FREEPLAY__BASE_URL": "https://acme.freeplay.ai/api",
        },
    )
    assert list(config.sinks) == ["local", "freeplay"]
    freeplay = config.sinks["freeplay"]
    assert isinstance(freeplay, VendorSinkConfig) and freeplay.api_key_env == "FREEPLAY_API_KEY"


def test_an_env_override_merges_into_a_file_sink_keeping_its_other_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HTTP_SINK + "batch = true\n"), {"SHIPPER__SINKS__REMOTE__TIMEOUT": "3"})
    remote = config.sinks["remote"]
    assert isinstance(remote, HttpSinkConfig)
    assert (remote.base_url, remote.batch, remote.timeout) == ("http://127.0.0.1:9/api", True, 3.0)
    assert list(config.sinks) == ["remote"]  # the file's [sinks] replaces the built-in ones


@pytest.mark.parametrize("text", ["0600", "0o600", "600"])
def test_a_socket_mode_given_as_text_is_octal_in_env_and_toml(tmp_path: Path, text: str) -> None:
    assert load_config(None, {"SHIPPER__INGEST__UNIX_MODE": text}).ingest.unix_mode == 0o600
    assert load_config(write(tmp_path, f'[ingest]\nunix_mode = "{text}"\n'), {}).ingest.unix_mode == 0o600
    assert load_config(write(tmp_path, "[ingest]\nunix_mode = 0o600\n"), {}).ingest.unix_mode == 0o600


def test_env_values_are_read_by_the_fields_type() -> None:
    config = load_config(
        None,
        {
            "SHIPPER__INGEST__TOKEN": "12345678",  # digits, but a token is a string
            "SHIPPER__INGEST__UNIX_GROUP": "1000",
            "SHIPPER__SPOOL__MAX_ROWS": "500",
            "SHIPPER__SPOOL__MAX_BYTES": "null",
            "SHIPPER__ENRICH__COST": "false",
            "SHIPPER__REDACT__BUILTIN": '["emails", "cards"]',
        },
    )
    assert config.ingest.token is not None and config.ingest.token.get_secret_value() == "12345678"
    assert config.ingest.unix_group == "1000"
    assert (config.spool.max_rows, config.spool.max_bytes) == (500, None)
    assert config.enrich.cost is False
    assert config.redact.builtin == ("emails", "cards")


# -- where a relative path points (issue 9, item 8) --------------------------------------------------------------


def test_relative_paths_in_a_file_resolve_against_its_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    text = (
        '[ingest]\nunix = "run/s.sock"\n[spool]\npath = "spool.db"\n'
        '[sinks.out]\ntype = "file"\npath = "out.ndjson"\n'
        '[sinks.kw]\ntype = "keywordsai"\napi_key_file = "keys/kw"\nca_file = "/abs/ca.pem"\n'
    )
    (tmp_path / "etc" / "shipper.toml").write_text(text)
    config = load_config(tmp_path / "etc" / "shipper.toml", {"SHIPPER__SINKS__OUT__PATH": "env.ndjson"})
    here = tmp_path / "etc"
    assert (config.ingest.unix, config.spool.path) == (str(here / "run/s.sock"), here / "spool.db")
    out, kw = config.sinks["out"], config.sinks["kw"]
    assert isinstance(out, FileSinkConfig) and isinstance(kw, VendorSinkConfig)
    assert out.path == Path("env.ndjson")  # a variable is not in the file: relative to the working directory
    assert (kw.api_key_file, kw.ca_file) == (here / "keys/kw", Path("/abs/ca.pem"))


def test_every_path_field_is_known_as_one() -> None:
    # resolve_paths finds path fields by their type: a new one typed `str` would silently stay cwd-relative.
    path_like = {"path", "unix", "ca_file", "auth_file", "api_key_file"}
    path_like |= {"cert_file", "key_file", "credentials_file", "nkey_seed_file", "token_file", "password_file"}
    for model in (IngestConfig, SpoolConfig, FileSinkConfig, HttpSinkConfig, VendorSinkConfig, JetStreamSinkConfig):
        for name in model.model_fields:
            found = slot(model, [name], {})
            assert found is not None
            assert found.is_path == (name in path_like), f"{model.__name__}.{name}"


def test_config_lookup_order(tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    env = {"SHIPPER_CONFIG": "/from/env.toml", "SHIPPER_SYSTEM_CONFIG": str(system)}
    assert find_config(Path("flag.toml"), env) == ConfigSource(Path("flag.toml"), "--config")
    assert find_config(None, env) == ConfigSource(Path("/from/env.toml"), "$SHIPPER_CONFIG")
    only_system = {"SHIPPER_SYSTEM_CONFIG": str(system)}
    assert find_config(None, only_system).path is None  # absent: the built-in defaults
    system.write_text("")
    assert find_config(None, only_system) == ConfigSource(system, "the system configuration")
    assert find_config(None, {}).describe().endswith(f"or {SYSTEM_CONFIG})")


# -- errors in shipper's words (issue 9, item 9) -----------------------------------------------------------------


def test_a_bad_value_names_the_file_line_key_and_what_is_expected(tmp_path: Path) -> None:
    text = '[daemon]\ndrain_timeout = 10\n\n[sinks.remote]\ntype = "http"\nbase_url = "ftp://x"\n'
    assert config_error(tmp_path, text) == (
        f"invalid config {tmp_path / 'shipper.toml'}: line 6: sinks.remote.base_url:"
        " must be an http:// or https:// URL without credentials"
    )


def test_a_missing_key_points_at_its_table_and_an_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[daemon]\ndrain_timout = 3\n\n[sinks.remote]\ntype = "http"\n')
    assert "line 2: daemon.drain_timout: unknown key (did you mean 'drain_timeout'?)" in message
    assert "line 4: sinks.remote.base_url: required, not set" in message


def test_a_bad_number_or_choice_says_what_was_expected_and_what_was_given(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[spool]\nlease_timeout = "5m"\ndurability = "sometimes"\n')
    assert "line 2: spool.lease_timeout: expected a number, got '5m'" in message
    assert "line 3: spool.durability: expected 'fsync' or 'os', got 'sometimes'" in message


def test_a_bad_env_override_names_the_variable_and_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"SHIPPER__INGEST__HTTP": "nope", "SHIPPER__INGEST__UNIX_MODE": "0999"})
    assert str(caught.value) == (
        "invalid config (built-in defaults): SHIPPER__INGEST__HTTP: ingest.http: expected host:port, got 'nope';"
        " SHIPPER__INGEST__UNIX_MODE: ingest.unix_mode: expected an octal mode such as 0o660 or \"0660\", got '0999'"
    )


def test_a_sink_made_by_variables_and_missing_a_key_names_those_variables() -> None:
    with pytest.raises(ConfigError, match=r"SHIPPER__SINKS__FP__TYPE: sinks\.fp: base_url is required for freeplay"):
        load_config(None, {"SHIPPER__SINKS__FP__TYPE": "freeplay"})


def test_a_token_of_the_wrong_type_is_named_but_never_shown(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[ingest]\ntoken = 98765432101234\n")
    assert "line 2: ingest.token: expected a string" in message
    assert "98765432101234" not in message


def test_a_bad_item_of_a_list_of_tables_names_its_index_and_line(tmp_path: Path) -> None:
    text = '[[redact.patterns]]\nname = "a"\nregex = "a"\n\n[[redact.patterns]]\nname = "b"\nregex = "("\n'
    assert "line 7: redact.patterns.1.regex: not a valid regular expression" in config_error(tmp_path, text)


def test_a_check_across_sections_names_its_keys_and_no_unrelated_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            None, {"SHIPPER__INGEST__HTTP": "", "SHIPPER__INGEST__UNIX": "", "SHIPPER__DAEMON__LOG_LEVEL": "info"}
        )
    assert str(caught.value) == (
        "invalid config (built-in defaults): ingest.http and ingest.unix are both empty: nothing would listen"
    )


OTLP_SINKS = """
[sinks.fp]
type = "freeplay"
base_url = "https://acme.freeplay.ai/api"
api_key_env = "FP_KEY"
project_id = "11111111-2222-3333-4444-555555555555"

[sinks.kw]
type = "keywordsai"
api_key_file = "kw.key"
"""


def test_the_otlp_receiver_is_off_by_default_and_routes_spans_to_the_named_vendor_sinks(tmp_path: Path) -> None:
    assert load_config(None, {}).otlp.http == ""
    text = f'[otlp]\nhttp = "127.0.0.1:4318"\nroute = ["fp", "kw"]\n{OTLP_SINKS}'
    config = load_config(write(tmp_path, text), {})
    assert (config.otlp.http, config.otlp.route) == ("127.0.0.1:4318", ("fp", "kw"))
    env = {"SHIPPER__OTLP__HTTP": "127.0.0.1:4319", "SHIPPER__OTLP__ROUTE": '["kw"]'}
    assert load_config(write(tmp_path, OTLP_SINKS), env).otlp.route == ("kw",)
    unix = load_config(write(tmp_path, f'[otlp]\nunix = "run/otlp.sock"\nroute = ["kw"]\n{OTLP_SINKS}'), {})
    assert (unix.otlp.http, Path(unix.otlp.unix).name) == ("", "otlp.sock")


@pytest.mark.parametrize(
    ("otlp", "sinks", "expected"),
    [
        ('http = "127.0.0.1:4318"', OTLP_SINKS, "otlp.route: empty while otlp.http listens"),
        ('unix = "otlp.sock"', OTLP_SINKS, "otlp.route: empty while otlp.unix listens"),
        ('unix = "in.sock"\nroute = ["kw"]\n[ingest]\nunix = "in.sock"', OTLP_SINKS, "is ingest.unix too"),
        ('http = "nope"\nroute = ["kw"]', OTLP_SINKS, "otlp.http: expected host:port, got 'nope'"),
        ('http = "0.0.0.0:4318"\nroute = ["kw"]', OTLP_SINKS, "is not loopback: set [ingest] token"),
        ('route = ["nope"]', OTLP_SINKS, "otlp.route: 'nope' is neither a vendor sink nor an otlp sink"),
        ('route = ["remote"]', HTTP_SINK, "otlp.route: 'remote' is neither a vendor sink nor an otlp sink"),
        (
            'route = ["kw"]',
            '[sinks.kw]\ntype = "keywordsai"\n',
            "sink kw needs its own key (api_key_env or api_key_file)",
        ),
        (
            'route = ["fp"]',
            OTLP_SINKS.replace('project_id = "11111111-2222-3333-4444-555555555555"', ""),
            "sink fp needs project_id to record spans",
        ),
    ],
    ids=[
        "no-route",
        "unix-no-route",
        "unix-shared",
        "bad-address",
        "off-loopback",
        "unknown-sink",
        "not-vendor",
        "no-key",
        "no-project",
    ],
)
def test_an_otlp_section_that_cannot_work_is_refused_naming_why(
    tmp_path: Path, otlp: str, sinks: str, expected: str
) -> None:
    assert expected in config_error(tmp_path, f"[otlp]\n{otlp}\n{sinks}")


def test_project_id_is_a_freeplay_project_id(tmp_path: Path) -> None:
    text = '[sinks.kw]\ntype = "keywordsai"\nproject_id = "p1"\n'
    assert "project_id is a Freeplay project's id" in config_error(tmp_path, text)
    text = OTLP_SINKS.replace("11111111-2222-3333-4444-555555555555", "../x")
    assert "project_id is a Freeplay project's id" in config_error(tmp_path, text)
