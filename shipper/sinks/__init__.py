"""Sinks: one module per destination type, all behind the `Sink` protocol."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shipper.config import SinkConfig
from shipper.config.sinks import FileSinkConfig, HttpSinkConfig, JetStreamSinkConfig, OtlpSinkConfig
from shipper.enrich.usage import Enricher
from shipper.errors import ConfigError
from shipper.jetstream.options import connect_options
from shipper.queue.base import Lookups
from shipper.secrets import read_secret
from shipper.sinks.base import Sink
from shipper.sinks.file import FileSink
from shipper.sinks.http import HttpSink
from shipper.sinks.jetstream import JetStreamSink
from shipper.sinks.otlp import OtlpSink
from shipper.sinks.transport import trust
from shipper.sinks.vendor import VendorSink
from shipper.vendors import VENDORS


def build_sink(
    name: str,
    config: SinkConfig,
    environ: Mapping[str, str],
    lookups: Lookups,
    enricher: Enricher | None = None,
    spool: Path | None = None,
) -> Sink:
    """`spool`: the spool's file, beside which a jetstream sink keeps its sidecar's state (required for one)."""
    if isinstance(config, FileSinkConfig):
        return FileSink(name, config)
    if isinstance(config, JetStreamSinkConfig):
        if spool is None:
            raise ConfigError(f"sinks.{name}: a jetstream sink needs a spool file beside which to keep its state")
        return JetStreamSink(name, config, environ, spool)
    if isinstance(config, HttpSinkConfig):
        return HttpSink(name, config, environ)
    if isinstance(config, OtlpSinkConfig):
        return OtlpSink(name, config, environ)
    return VendorSink(name, VENDORS[config.type], config, lookups, environ, enricher)


async def start_sinks(sinks: Mapping[str, Sink]) -> None:
    """Start every sink, or none: on a failure the ones started are closed, and a ConfigError names the sink."""
    started: list[Sink] = []
    for name, sink in sinks.items():
        try:
            await sink.start()
        except (OSError, ValueError) as exc:
            for done in [*started, sink]:
                await done.close()
            raise ConfigError(f"sinks.{name}: cannot start: {exc}") from exc
        started.append(sink)


def check_secrets(sinks: Mapping[str, SinkConfig], environ: Mapping[str, str]) -> None:
    """Resolve every sink's secret and CA file now, so `check-config` refuses exactly what `run` would (ConfigError)."""
    for name, config in sinks.items():
        if isinstance(config, FileSinkConfig):
            continue
        if isinstance(config, JetStreamSinkConfig):
            connect_options(f"sinks.{name}", config, environ)
            continue
        if isinstance(config, HttpSinkConfig | OtlpSinkConfig):
            read_secret(f"sinks.{name}", config.auth_env, config.auth_file, environ)
        else:
            read_secret(f"sinks.{name}", config.api_key_env, config.api_key_file, environ, "api_key")
        trust(name, config.ca_file)


__all__ = ["Sink", "VendorSink", "build_sink", "check_secrets", "start_sinks"]
