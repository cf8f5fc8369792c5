"""`[sinks.NAME] type = "jetstream"` and `[relay]`: their keys, the refusals that name the key, and secrets read from
the environment or files, never written in the configuration or an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipper.config import load_config
from shipper.config.relay import RelayConfig
from shipper.config.sinks import JetStreamSinkConfig
from shipper.errors import ConfigError
from shipper.jetstream.options import connect_options
from shipper.sinks import check_secrets


def sink(**over: Any) -> JetStreamSinkConfig:
    fields: dict[str, Any] = {"type": "jetstream", "servers": ["nats://127.0.0.1:4222"], "stream": "ROWS"}
    fields["target"] = "humanloop"
    return JetStreamSinkConfig.model_validate({**fields, **over})


def test_a_jetstream_sink_from_toml_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "shipper.toml"
    path.write_text(
        '[sinks.fleet]\ntype = "jetstream"\nservers = ["nats://a:4222", "tls://b:4222"]\nstream = "ROWS"\n'
        'target = "humanloop"\ncredentials_file = "fleet.creds"\n'
    )
    config = load_config(path, {"SHIPPER__SINKS__FLEET__PARTITIONS": "32"}).sinks["fleet"]
    assert isinstance(config, JetStreamSinkConfig)
    assert (config.subject_prefix, config.partitions, config.replicas) == ("shipper.rows", 32, 3)
    assert (config.batch_max_records, config.duplicate_window, config.create_stream) == (512, 600.0, True)
    assert config.credentials_file == tmp_path / "fleet.creds"  # relative to the file, as every path


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"servers": []}, "at least 1"),
        ({"servers": ["http://x:4222"]}, "nats:// or tls://"),
        ({"servers": ["nats://me:secret@x:4222"]}, "without credentials"),
        ({"stream": "a.b"}, "stream name"),
        ({"subject_prefix": "a.*"}, "wildcards"),
        ({"subject_prefix": "a..b"}, "tokens"),
        ({"partitions": 0}, "greater than or equal to 1"),
        ({"token_env": "T", "token_file": "/t"}, "token_env or token_file"),
        ({"password_env": "P", "user": "u", "password_file": "/p"}, "password_env or password_file"),
        ({"password_env": "P"}, "needs user"),
        ({"cert_file": "/c.pem"}, "go together"),
        ({"duplicate_window": 30}, "duplicate_window must exceed"),
    ],
)
def test_a_bad_jetstream_sink_is_refused_naming_what_is_wrong(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sink(**over)


def test_secrets_come_from_the_environment_or_files_and_errors_never_show_them(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-123\n")
    configured = sink(token_file=tmp_path / "token", user="u", password_env="PW")
    options = connect_options("sinks.fleet", configured, {"PW": "pw"})
    assert (options["token"], options["user"], options["password"]) == ("tok-123", "u", "pw")
    assert "tls" not in options  # plain nats:// and no TLS file: no TLS
    with pytest.raises(ConfigError, match=r"sinks\.fleet\.token_env: environment variable T is not set"):
        check_secrets({"fleet": sink(token_env="T")}, {})
    with pytest.raises(ConfigError, match=r"sinks\.fleet\.credentials_file: cannot read"):
        check_secrets({"fleet": sink(credentials_file=tmp_path / "missing.creds")}, {})


def test_a_tls_server_gets_a_verifying_context() -> None:
    options = connect_options("sinks.fleet", sink(servers=["tls://127.0.0.1:4222"]), {})
    assert options["tls"].verify_mode.name == "CERT_REQUIRED"


def test_a_relay_from_toml_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "shipper.toml"
    path.write_text('[relay]\nservers = ["nats://a:4222"]\nstream = "ROWS"\ncredentials_file = "relay.creds"\n')
    relay = load_config(path, {"SHIPPER__RELAY__PARTITIONS": "32"}).relay
    assert relay is not None
    assert (relay.partitions, relay.subject_prefix, relay.durable_prefix, relay.bucket) == (
        32,
        "shipper.rows",
        "shipper-relay",
        "shipper-relay",
    )
    assert (relay.max_ack_pending, relay.ack_wait, relay.lease_ttl, relay.timeout) == (256, 15.0, 10.0, 2.0)
    assert relay.credentials_file == tmp_path / "relay.creds"
    assert load_config(None, {}).relay is None  # only a relay's configuration has one


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"servers": []}, "at least 1"),
        ({"stream": "a.b"}, "stream name"),
        ({"durable_prefix": "a.b"}, "letters, digits"),
        ({"bucket": ""}, "letters, digits"),
        ({"timeout": 5, "ack_wait": 12}, "below ack_wait / 3"),
        ({"timeout": 3, "lease_ttl": 6}, "below lease_ttl / 3"),
        ({"token_env": "T", "token_file": "/t"}, "token_env or token_file"),
        ({"max_ack_pending": 0}, "greater than or equal to 1"),
    ],
)
def test_a_bad_relay_is_refused_naming_what_is_wrong(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RelayConfig.model_validate({"servers": ["nats://127.0.0.1:4222"], "stream": "ROWS", **over})


HL = '[sinks.hl]\ntype = "humanloop"\nvia = "{via}"\n'
FLEET = '[sinks.{name}]\ntype = "jetstream"\nservers = ["nats://a:4222"]\nstream = "ROWS"\ntarget = "hl"\n'
OUT = '[sinks.out]\ntype = "http"\nbase_url = "http://127.0.0.1:9"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HL.format(via="nowhere") + FLEET.format(name="fleet"), "sinks.hl.via = 'nowhere': no jetstream sink"),
        (HL.format(via="out") + OUT, "sinks.hl.via = 'out': no jetstream sink"),
        (
            HL.format(via="fleet") + FLEET.format(name="fleet")
            + '[sinks.hl2]\ntype = "humanloop"\ndropin = false\nvia = "fleet"\n',
            "sinks hl and hl2 both go via fleet",
        ),
        (
            HL.format(via="fleet") + FLEET.format(name="fleet") + '[otlp]\nhttp = "127.0.0.1:4318"\nroute = ["hl"]\n',
            "spans do not travel through the stream yet",
        ),
    ],
)  # fmt: skip
def test_a_vendor_sink_going_via_what_is_no_jetstream_sink_of_its_own_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "shipper.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


def test_a_vendor_sink_via_its_jetstream_sink(tmp_path: Path) -> None:
    path = tmp_path / "shipper.toml"
    path.write_text(HL.format(via="fleet") + FLEET.format(name="fleet"))
    config = load_config(path, {})
    assert config.sinks["hl"].via == "fleet"  # type: ignore[union-attr]
