"""`[sinks.NAME]`: the kinds of sink (a file, a plain HTTP endpoint, an OTLP collector, a vendor's own API, a JetStream
stream) and the keys each takes.

One module for the kinds because they share the delivery policy's keys (backoff, give-up, concurrency, the
breaker) and the rule for a remote's URL. The vendor `type`s and their default base URLs are spelled out here, not
read from `VENDORS`: the config sits below the vendor registry in the layers, and a pydantic tag must be a Literal
that mypy can read, so tests/unit/test_vendor_registry.py holds both equal to the registry instead.
Not responsible for building sinks or reading their secrets (shipper/sinks/).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shipper.config.nats import NatsStream
from shipper.config.section import Section


class _SinkBase(Section):
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


class _HttpEndpoint(_SinkBase):
    """The keys of a sink that speaks HTTP to an endpoint of the operator's choosing: where, how long to wait, whom to
    trust and how to authenticate (an `http` sink, an `otlp` sink)."""

    base_url: str
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
    def _check_auth(self) -> _HttpEndpoint:
        if self.auth_env and self.auth_file:
            raise ValueError("set auth_env or auth_file, not both")
        return self


class HttpSinkConfig(_HttpEndpoint):
    type: Literal["http"]
    # Replay (false): each record is its own request. Batch (true): many bodies in one NDJSON POST.
    batch: bool = False
    batch_max_records: int = Field(1000, ge=1)
    batch_max_bytes: int = Field(1024 * 1024, gt=0)
    # How long a partial batch may wait for more records before it is sent anyway.
    batch_timeout: float = Field(1.0, ge=0)


# A project id is a path segment of every Freeplay call: nothing that could alter the URL.
PROJECT_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"


class OtlpSinkConfig(_HttpEndpoint):
    """An OpenTelemetry endpoint (a Collector, or a vendor's own OTLP intake): every export request the OTLP
    receiver took, forwarded whole, in the encoding the endpoint wants. `base_url` is as OTEL_EXPORTER_OTLP_ENDPOINT:
    /v1/traces and /v1/logs are appended (Keywords AI: https://api.keywordsai.co/api)."""

    type: Literal["otlp"]
    encoding: Literal["protobuf", "json"] = "protobuf"


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
    # Freeplay only: the project that LLM spans received over OTLP are recorded in (a drop-in call names its own).
    project_id: str = ""
    # The `jetstream` sink this vendor's drop-in calls (and /v1/records items naming this sink) are spooled for: they
    # go into the stream, for a relay's sink (the jetstream sink's `target`) to deliver with its own key. Empty:
    # delivered from here.
    via: str = ""

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
        if self.project_id and (self.type != "freeplay" or not re.fullmatch(PROJECT_ID, self.project_id)):
            raise ValueError("project_id is a Freeplay project's id (letters, digits, '_', '.', ':', '-')")
        return self

    def cannot_record_spans(self) -> str | None:
        """Why this sink cannot be in `[otlp] route`, or None: an exporter sends one set of headers for every vendor,
        so spans travel with the sink's own key; and a Freeplay completion's path names its project."""
        if not (self.api_key_env or self.api_key_file):
            return "needs its own key (api_key_env or api_key_file) to record spans"
        if self.type == "freeplay" and not self.project_id:
            return "needs project_id to record spans"
        return None


class JetStreamSinkConfig(_SinkBase, NatsStream):
    """A NATS JetStream stream: the sidecar publishes its spooled rows there, for a group of relays to deliver.

    The spool stays the acknowledgement boundary: a row leaves it only on the stream's PubAck (sinks/jetstream/).
    The link's keys (servers, TLS, credentials) and the stream's (stream, subject_prefix, partitions) are
    NatsStream's, shared with `[relay]`.
    """

    type: Literal["jetstream"]
    # The sink the relay delivers these rows to, by its name in the relay's configuration (carried in each message).
    target: str
    # Rows per send; every row of a send is published before their PubAcks are awaited. Publishes awaiting a PubAck
    # are bounded by concurrency x batch_max_records.
    batch_max_records: int = Field(512, ge=1, le=4096)
    batch_timeout: float = Field(0.05, ge=0)
    # Keyless records (no key, scope, after or kind: nothing orders them) of one request travel up to this many in
    # one message; 1: a message per record. A relay whose sink sends records one by one takes such a message into
    # its own spool, which splits it.
    bundle_max_records: int = Field(1, ge=1, le=4096)
    # How long a published row may wait for its PubAck before the send is retried (a repeat the stream drops).
    timeout: float = Field(10.0, gt=0)
    # Create the stream when it does not exist (file storage, `replicas` copies, this dedup window); false: an
    # operator creates it, and publishing waits until it exists.
    create_stream: bool = True
    replicas: int = Field(3, ge=1, le=5)
    # The stream drops a message whose Nats-Msg-Id it stored this recently: a row published again (its PubAck was
    # lost, the sidecar died before settling) within the window is stored once. Must exceed the longest retry gap.
    duplicate_window: float = Field(600.0, gt=0)
    # The stream the sink creates keeps a message until a relay acknowledged it ("workqueue": one consumer per
    # partition, as the relays make them), or by its limits alone ("limits", for other readers as well; it then grows
    # until max_bytes or max_age).
    retention: Literal["workqueue", "limits"] = "workqueue"
    # Bounds of the stream the sink creates. Full at max_bytes, the stream refuses new messages (the sidecar holds
    # them in its spool and retries), never dropping one it stored. max_age drops what is older, delivered or not.
    max_bytes: int | None = Field(None, gt=0)
    max_age: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> JetStreamSinkConfig:
        if self.duplicate_window <= self.retry_max_backoff + self.timeout:
            raise ValueError(
                "duplicate_window must exceed retry_max_backoff + timeout, the longest gap between two publishes of"
                " a row while the sidecar runs"
            )
        return self
