"""Sinks: one module per destination type, all behind the `Sink` protocol."""

from __future__ import annotations

from collections.abc import Mapping

from shipper.config import FileSinkConfig, SinkConfig
from shipper.sinks.base import Sink
from shipper.sinks.file import FileSink
from shipper.sinks.http import HttpSink


def build_sink(name: str, config: SinkConfig, environ: Mapping[str, str]) -> Sink:
    if isinstance(config, FileSinkConfig):
        return FileSink(name, config)
    return HttpSink(name, config, environ)


__all__ = ["Sink", "build_sink"]
