"""The keys of a link to NATS servers, shared by what publishes (a `jetstream` sink) and what consumes (`[relay]`):
where the servers are, whom to trust, and the credentials as nats-py takes them.

One home, so a sidecar and a relay are configured alike and checked alike. Not responsible for reading the secrets
(shipper/jetstream/options.py) or for what travels over the link.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from shipper.config.section import Section


class NatsLink(Section):
    servers: list[str] = Field(min_length=1)
    # TLS (verification always on): trust this CA instead of the system's; a client certificate for mutual TLS.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Credentials as nats-py takes them, from files or the environment, never the configuration itself.
    credentials_file: Path | None = None  # a .creds file (user JWT and nkey seed)
    nkey_seed_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    @field_validator("servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("nats://", "tls://")) or "@" in url.split("/")[2]:
                raise ValueError("each server must be a nats:// or tls:// URL without credentials")
        return value

    @model_validator(mode="after")
    def _check_link(self) -> NatsLink:
        for env, file in (("token_env", "token_file"), ("password_env", "password_file")):
            if getattr(self, env) and getattr(self, file):
                raise ValueError(f"set {env} or {file}, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if (self.password_env or self.password_file) and not self.user:
            raise ValueError("a password needs user")
        return self


class NatsStream(NatsLink):
    """Where the rows travel, as the sidecars' `jetstream` sink and the relays must both name it: the same stream,
    subjects and partitions on both sides."""

    stream: str
    # Messages are on `<subject_prefix>.<partition>`, partitions 0 .. partitions - 1; a stream the sink creates takes
    # `<subject_prefix>.>`.
    subject_prefix: str = "shipper.rows"
    # Everything one ordering group needs (an entity, a session, a trace) lands in one of these, by a stable hash.
    partitions: int = Field(16, ge=1, le=4096)

    @field_validator("stream")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        if not value or any(c in value for c in " \t.*>/\\"):
            raise ValueError("a stream name without spaces, '.', '*', '>', '/' or '\\'")
        return value

    @field_validator("subject_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        tokens = value.split(".")
        if not all(tokens) or any(c in value for c in " \t*>"):
            raise ValueError("dot-separated tokens without spaces or wildcards ('*', '>')")
        return value
