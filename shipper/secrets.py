"""Reading a secret the configuration points at (an environment variable or a file), never one written in it.

A module of its own at the bottom of the layers because sinks (API keys, auth headers) and the NATS link (tokens,
passwords), which live in different layers, read secrets the same way; the error names the key, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shipper.errors import ConfigError


def read_secret(
    where: str, env_name: str | None, file: Path | None, environ: Mapping[str, str], key: str = "auth"
) -> str | None:
    """A secret from the environment or a file; `where` is the table that names it (`sinks.NAME`, `relay`)."""
    if env_name:
        value = environ.get(env_name)
        if not value:
            raise ConfigError(f"{where}.{key}_env: environment variable {env_name} is not set")
        return value
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}.{key}_file: cannot read {file}: {exc.strerror}") from exc
    return None
