"""Configuration: the root model composing every section, loaded from TOML plus `SHIPPER__SECTION__KEY` overrides.

Every default and the reason for it lives in the section modules beside this one (process.py: `[daemon]` and
`[spool]`; listeners.py: `[ingest]` and `[admin]`; sinks.py: `[sinks.NAME]`; transform.py: `[enrich]` and
`[redact]`; relay.py: `[relay]`); `config/shipper.toml` documents the same values and a test keeps the two
equal. Running with no file at all uses these defaults (a `file` sink, so nothing needs an account). This module
holds what spans sections: which kinds a sink table may be, the checks across sections, and loading.
Not responsible for reading secrets' values at import time: sinks resolve them when they are built; nor for how
a file and the environment become raw data (configfile.py) or how a bad one is explained (configtext.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator

from shipper.config.listeners import AdminConfig, IngestConfig, is_loopback, parse_host_port
from shipper.config.otlp import OtlpConfig
from shipper.config.process import DaemonConfig, SpoolConfig
from shipper.config.relay import RelayConfig
from shipper.config.section import Section
from shipper.config.sinks import FileSinkConfig, HttpSinkConfig, JetStreamSinkConfig, OtlpSinkConfig, VendorSinkConfig
from shipper.config.transform import EnrichConfig, RedactConfig
from shipper.configfile import apply_env, resolve_paths
from shipper.configtext import Origin, describe, read_toml
from shipper.errors import ConfigError

# A `[sinks.NAME]` table is one of these kinds, told apart by its `type`.
SinkConfig = Annotated[
    FileSinkConfig | HttpSinkConfig | VendorSinkConfig | OtlpSinkConfig | JetStreamSinkConfig,
    Field(discriminator="type"),
]


def _default_sinks() -> dict[str, SinkConfig]:
    return {"local": FileSinkConfig(type="file", path=Path("var/out.ndjson"))}


class Config(Section):
    daemon: DaemonConfig = DaemonConfig()
    ingest: IngestConfig = IngestConfig()
    admin: AdminConfig = AdminConfig()
    otlp: OtlpConfig = OtlpConfig()
    spool: SpoolConfig = SpoolConfig()
    sinks: dict[str, SinkConfig] = Field(default_factory=_default_sinks)
    enrich: EnrichConfig = EnrichConfig()
    redact: RedactConfig = RedactConfig()
    # Only `shipper run --role relay` reads it: the stream it consumes (README: Scaling out).
    relay: RelayConfig | None = None

    @field_validator("sinks")
    @classmethod
    def _check_sinks(cls, value: dict[str, SinkConfig]) -> dict[str, SinkConfig]:
        if not value:
            raise ValueError("at least one sink is required")
        for name in value:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"sink name {name!r} must be letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _check_dropin(self) -> Config:
        serving: dict[str, str] = {}
        for name, sink in self.sinks.items():
            if isinstance(sink, VendorSinkConfig) and sink.dropin:
                if sink.type in serving:
                    raise ValueError(
                        f"sinks {serving[sink.type]} and {name} both serve {sink.type}'s drop-in paths;"
                        " set dropin = false on one"
                    )
                serving[sink.type] = name
        return self

    @model_validator(mode="after")
    def _check_via(self) -> Config:
        carried: dict[str, str] = {}
        for name, sink in self.sinks.items():
            if not isinstance(sink, VendorSinkConfig) or not sink.via:
                continue
            if not isinstance(self.sinks.get(sink.via), JetStreamSinkConfig):
                raise ValueError(f"sinks.{name}.via = {sink.via!r}: no jetstream sink of that name")
            if sink.via in carried:
                raise ValueError(
                    f"sinks {carried[sink.via]} and {name} both go via {sink.via}, whose one `target` names the relay's"
                    " sink: give each vendor a jetstream sink of its own (they may share the stream)"
                )
            carried[sink.via] = name
        return self

    @model_validator(mode="after")
    def _check_listeners(self) -> Config:
        if not self.ingest.http and not self.ingest.unix:
            raise ValueError("ingest.http and ingest.unix are both empty: nothing would listen")
        return self

    @model_validator(mode="after")
    def _check_otlp(self) -> Config:
        otlp = self.otlp
        if (otlp.http or otlp.unix) and not otlp.route:
            listening = "otlp.http" if otlp.http else "otlp.unix"
            raise ValueError(f"otlp.route: empty while {listening} listens: name the vendor sinks that record spans")
        if otlp.unix and Path(otlp.unix).resolve() == Path(self.ingest.unix).resolve():
            raise ValueError(f"otlp.unix = {otlp.unix!r} is ingest.unix too: give the receiver a socket of its own")
        if otlp.http and not is_loopback(parse_host_port(otlp.http)[0]) and not self.ingest.token:
            raise ValueError(f"otlp.http = {otlp.http!r} is not loopback: set [ingest] token so strangers cannot write")
        for name in otlp.route:
            sink = self.sinks.get(name)
            if isinstance(sink, OtlpSinkConfig):
                continue
            if not isinstance(sink, VendorSinkConfig):
                raise ValueError(f"otlp.route: {name!r} is neither a vendor sink nor an otlp sink")
            if sink.via:
                raise ValueError(
                    f"otlp.route: sink {name} goes via {sink.via}; spans do not travel through the stream yet:"
                    " route them to a vendor sink delivering from here"
                )
            problem = sink.cannot_record_spans()
            if problem is not None:
                raise ValueError(f"otlp.route: sink {name} {problem}")
        return self


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read TOML (or the built-in defaults when path is None), apply env overrides key by key, validate.

    Relative paths in the file are read against the file's directory; those of the built-in defaults and of
    environment variables against the working directory."""
    origin = Origin(Config, {}, path)
    if path is not None:
        origin.data, origin.text = read_toml(path)
        resolve_paths(Config, origin.data, path.absolute().parent)
    origin.env = apply_env(Config, origin.data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(origin.data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, origin)) from None
