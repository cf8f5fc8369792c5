"""Configuration: pydantic models loaded from TOML, plus `SHIPPER__SECTION__KEY` environment overrides.

Every default and the reason for it lives here; `config/shipper.toml` documents the same values and a test keeps
the two equal. Running with no file at all uses these defaults (a `file` sink, so nothing needs an account).
Not responsible for reading secrets' values at import time: sinks resolve them when they are built; nor for how
a file and the environment become raw data (configfile.py) or how a bad one is explained (configtext.py).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shipper.configfile import FILE_PATH, apply_env, resolve_paths
from shipper.configtext import Origin, describe, read_toml
from shipper.core.redaction import PathRule
from shipper.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonConfig(_Section):
    # Long enough for a normal in-flight request to finish, short enough for systemd's stop timeout.
    drain_timeout: float = Field(10.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Processes beside one spool (supervisor.py): 0 and 0 is one process doing both; "auto" sizes to the cores.
    ingest_workers: int | Literal["auto"] = Field(0, ge=0)
    delivery_workers: int | Literal["auto"] = Field(0, ge=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> DaemonConfig:
        if (self.ingest_workers == 0) != (self.delivery_workers == 0):
            raise ValueError("ingest_workers and delivery_workers are both 0 (one process) or both at least 1")
        return self

    def workers(self, cores: int) -> tuple[int, int]:
        """(ingest, delivery) processes; (0, 0) means one process doing both. `auto`: half the cores each, or 1."""
        half = max(1, cores // 2)
        ingest = half if self.ingest_workers == "auto" else self.ingest_workers
        delivery = max(1, cores - half) if self.delivery_workers == "auto" else self.delivery_workers
        return ingest, delivery


def parse_host_port(value: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port`; raises ValueError with a readable message."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _octal(value: object) -> object:
    """A mode written as text is octal, as chmod reads it: "0600", "0o600" and "600" are all 0o600."""
    if not isinstance(value, str):
        return value
    digits = value.strip().lower().removeprefix("0o")
    if not digits or not set(digits) <= set("01234567"):
        raise ValueError(f'expected an octal mode such as 0o660 or "0660", got {value!r}')
    return int(digits, 8)


FileMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o777)]


class _Listener(_Section):
    """A TCP listener (`http`) and the token it needs when it is not loopback: the one bind rule of both listeners."""

    # Which section it is and what a stranger could do through it, for the refusal's message.
    _SECTION: ClassVar[str]
    _EXPOSES: ClassVar[str]
    http: str = ""
    token: SecretStr | None = None

    @field_validator("http")
    @classmethod
    def _check_http(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _check_exposure(self) -> Self:
        http, token = getattr(self, "http"), getattr(self, "token")  # noqa: B009 - declared by each subclass
        if http and not is_loopback(parse_host_port(http)[0]) and not token:
            raise ValueError(
                f"http = {http!r} is not loopback: set [{self._SECTION}] token so strangers cannot {self._EXPOSES}"
            )
        return self


class IngestConfig(_Listener):
    _SECTION: ClassVar[str] = "ingest"
    _EXPOSES: ClassVar[str] = "write"

    # Loopback by default: the app is on the same host, and nothing else should reach the spool.
    http: str = "127.0.0.1:8790"
    unix: Annotated[str, FILE_PATH] = "var/shipper.sock"
    # Owner and group may write; a sidecar app joins the group to use the socket.
    unix_mode: FileMode = 0o660
    # Larger than any sane single LLM record (long contexts included), small enough to bound memory per request.
    max_body_bytes: int = Field(5 * 1024 * 1024, gt=0)
    # One NDJSON line is one record: a line this long is a mistake or an attack, not a log.
    max_line_bytes: int = Field(1024 * 1024, gt=0)
    # Records per request: bounds the work one request can make the writer do.
    max_items: int = Field(10_000, gt=0)
    # JSON nesting deeper than this is refused (orjson itself cannot re-encode past 254 levels).
    max_depth: int = Field(128, ge=2, le=250)
    # Requests handled at once; past it, 503 with Retry-After instead of unbounded memory.
    max_concurrent_requests: int = Field(1024, gt=0)
    # A client that takes longer than this to send its body gets 408; idle keep-alive connections close after it.
    client_timeout: float = Field(15.0, gt=0)
    # Largest request line / header field; longer ones get 400 from the HTTP parser.
    max_header_bytes: int = Field(8190, ge=1024)
    # Group owning the Unix socket ("" keeps the daemon's own group).
    unix_group: str = ""
    # Shared secret (Authorization: Bearer or X-Shipper-Token) for TCP requests; required off loopback.
    token: SecretStr | None = None


class AdminConfig(_Listener):
    """The operations-only listener (/metrics, /healthz, /readyz, /v1/status): scraping it never opens ingest."""

    _SECTION: ClassVar[str] = "admin"
    _EXPOSES: ClassVar[str] = "read status"

    # Off by default: ingest already serves these routes; switch it on to scrape or probe from outside the host or pod.
    http: str = ""
    # Required when `http` is not a loopback address; asked for /metrics and /v1/status, never for the probes.
    token: SecretStr | None = None


class SpoolConfig(_Section):
    path: Path = Path("var/spool.db")
    # fsync: synchronous=FULL, an ack survives power loss. os: synchronous=NORMAL, an ack survives a process crash.
    durability: Literal["fsync", "os"] = "fsync"
    # A leased row comes back to the queue after this long if its sender vanished; above any sink timeout.
    lease_timeout: float = Field(300.0, gt=0)
    # Bounds on what the spool may hold (None: no bound but the disk). Bytes are live pages plus the WAL.
    max_bytes: int | None = Field(None, gt=0)
    max_rows: int | None = Field(None, gt=0)
    # reject: ingest answers 503 + Retry-After and nothing acknowledged is dropped. drop_oldest: make room.
    when_full: Literal["reject", "drop_oldest"] = "reject"


class _SinkBase(_Section):
    # Full-jitter exponential backoff: the first retry waits up to retry_initial_backoff, doubling to the cap.
    retry_initial_backoff: float = Field(0.5, gt=0)
    retry_max_backoff: float = Field(30.0, gt=0)
    # None: retry without limit, so an outage of hours loses nothing. Set to give up into the dead-letter table.
    max_attempts: int | None = Field(None, ge=1)
    max_age: float | None = Field(None, gt=0)
    # Requests in flight at once; the remote's capacity, not ours, is the limit that matters.
    concurrency: int = Field(16, ge=1, le=1024)
    # Adapt the in-flight limit below `concurrency` to the remote: +1 per healthy round, x0.9 on 429/503 or slowing.
    adaptive_concurrency: bool = True
    # Consecutive failures that open the circuit (then one probe at a time until a success closes it).
    breaker_threshold: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _check_backoff(self) -> _SinkBase:
        if self.retry_initial_backoff > self.retry_max_backoff:
            raise ValueError("retry_initial_backoff must not exceed retry_max_backoff")
        return self


class FileSinkConfig(_SinkBase):
    type: Literal["file"]
    path: Path
    # Delivered means on disk: fsync after each batch so a crash after the ack cannot lose the line.
    fsync: bool = True
    batch_max_records: int = Field(1000, ge=1)
    concurrency: int = Field(1, ge=1, le=1)


class HttpSinkConfig(_SinkBase):
    type: Literal["http"]
    base_url: str
    # Replay (false): each record is its own request. Batch (true): many bodies in one NDJSON POST.
    batch: bool = False
    batch_max_records: int = Field(1000, ge=1)
    batch_max_bytes: int = Field(1024 * 1024, gt=0)
    # How long a partial batch may wait for more records before it is sent anyway.
    batch_timeout: float = Field(1.0, ge=0)
    # A remote that has not answered by then is treated as failed and retried.
    timeout: float = Field(30.0, gt=0)
    # Verify the remote's TLS certificate against this bundle instead of the system's (verification is always on).
    ca_file: Path | None = None
    auth_header: str = "Authorization"
    # The header's whole value (e.g. "Bearer abc") comes from this environment variable or file; never the config.
    auth_env: str | None = None
    auth_file: Path | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return check_base_url(value)

    @model_validator(mode="after")
    def _check_auth(self) -> HttpSinkConfig:
        if self.auth_env and self.auth_file:
            raise ValueError("set auth_env or auth_file, not both")
        return self


VENDOR_BASE_URLS = {
    # Freeplay's API lives under each organisation's own host (https://<org>.freeplay.ai/api): no default.
    "humanloop": "https://api.humanloop.com/v5",
    "keywordsai": "https://api.keywordsai.co",
}


def check_base_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or "@" in value.split("/")[2]:
        raise ValueError("must be an http:// or https:// URL without credentials")
    return value.rstrip("/")


class VendorSinkConfig(_SinkBase):
    """A vendor's own API: its drop-in paths are served by shipper and forwarded here."""

    type: Literal["freeplay", "humanloop", "keywordsai"]
    base_url: str = ""
    # The sink's own API key, used when the app sends none (or always, with override_key).
    api_key_env: str | None = None
    api_key_file: Path | None = None
    override_key: bool = False
    # Proxied calls (prompt fetches, lists) travel with the caller's own key only: with the sink's key, any local
    # process could read the vendor's data under it. True opts in (a caller with no key gets the sink's key).
    proxy_sink_key: bool = False
    # Connections for proxied calls, apart from deliveries, so that neither can starve the other.
    proxy_concurrency: int = Field(4, ge=1)
    timeout: float = Field(30.0, gt=0)
    ca_file: Path | None = None
    # Serve this vendor's SDK paths on the ingest listeners; at most one sink per vendor may.
    dropin: bool = True

    @model_validator(mode="after")
    def _check(self) -> VendorSinkConfig:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set api_key_env or api_key_file, not both")
        if self.override_key and not (self.api_key_env or self.api_key_file):
            raise ValueError("override_key needs api_key_env or api_key_file")
        base_url = self.base_url or VENDOR_BASE_URLS.get(self.type, "")
        if not base_url:
            raise ValueError(f"base_url is required for {self.type} (e.g. https://<org>.freeplay.ai/api)")
        object.__setattr__(self, "base_url", check_base_url(base_url))
        return self


SinkConfig = Annotated[FileSinkConfig | HttpSinkConfig | VendorSinkConfig, Field(discriminator="type")]


class EnrichConfig(_Section):
    """Filling in what a vendor record lacks, just before it is forwarded (never on the ingest path)."""

    # Count missing usage with tiktoken, offline: an estimate (marked as one) beats an empty usage column.
    tokens: bool = True
    # Price a missing cost where the vendor's format takes one (Humanloop, Keywords AI) from genai-prices' table.
    cost: bool = True


# The built-in pattern sets (shipper/core/redaction.py defines them).
BuiltinRedaction = Literal["emails", "cards", "api_keys", "bearer_tokens", "aws_keys", "jwts"]
# Names a redacted record may list: a user pattern must not pass for one of these.
_RESERVED_NAMES = frozenset({*get_args(BuiltinRedaction), "drop", "mask"})


def _check_field_path(path: str) -> str:
    PathRule.parse(path)
    return path


class RedactPattern(_Section):
    # The name a redacted record lists in its metadata, so it must be short and plain.
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    regex: str = Field(min_length=1)
    # Literal text (no group references): what a match becomes.
    replacement: str = "[REDACTED]"

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RedactConfig(_Section):
    """Rules applied to every record before it is written to the spool; all off by default."""

    # Off by default: redaction rewrites what the app chose to log, so the operator decides what to lose.
    builtin: tuple[BuiltinRedaction, ...] = ()
    # Field paths, one glob per dot-separated segment (`inputs.password`, `metadata.*token*`, `**.ssn`).
    drop: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    # What a masked field's value becomes; a string so every vendor's schema still accepts the record.
    mask_with: str = "[REDACTED]"
    patterns: tuple[RedactPattern, ...] = ()

    @field_validator("drop", "mask")
    @classmethod
    def _check_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_field_path(path) for path in value)

    @model_validator(mode="after")
    def _check_names(self) -> RedactConfig:
        names = [p.name for p in self.patterns]
        clash = sorted({n for n in names if names.count(n) > 1 or n in _RESERVED_NAMES})
        if clash:
            raise ValueError(f"pattern names must be unique and differ from built-in rules: {', '.join(clash)}")
        return self


def _default_sinks() -> dict[str, SinkConfig]:
    return {"local": FileSinkConfig(type="file", path=Path("var/out.ndjson"))}


class Config(_Section):
    daemon: DaemonConfig = DaemonConfig()
    ingest: IngestConfig = IngestConfig()
    admin: AdminConfig = AdminConfig()
    spool: SpoolConfig = SpoolConfig()
    sinks: dict[str, SinkConfig] = Field(default_factory=_default_sinks)
    enrich: EnrichConfig = EnrichConfig()
    redact: RedactConfig = RedactConfig()

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
    def _check_listeners(self) -> Config:
        if not self.ingest.http and not self.ingest.unix:
            raise ValueError("ingest.http and ingest.unix are both empty: nothing would listen")
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
