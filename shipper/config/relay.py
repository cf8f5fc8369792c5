"""`[relay]`: what a relay (`shipper run --role relay`) consumes, and how it shares the partitions with its peers.

A relay reads the stream sidecars' `jetstream` sinks publish into and delivers each message with the sink of this
configuration that the message names (its `target`), using that sink's own keys. The link's keys (servers, TLS,
credentials) are NatsLink's, as a jetstream sink's are. Not responsible for consuming (shipper/queue/jetstream/).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from shipper.config.nats import NatsStream


class RelayConfig(NatsStream):
    # One durable pull consumer per partition, `<durable_prefix>-<partition>`, shared by every relay of the group.
    durable_prefix: str = "shipper-relay"
    # Messages a partition's consumer hands out unacknowledged, at most: the relay's memory holds no more than
    # partitions x max_ack_pending messages; the rest of a backlog waits in the stream.
    max_ack_pending: int = Field(256, ge=1, le=65536)
    # How long the stream waits for an acknowledgement before it hands a message out again. A relay keeps what it
    # holds with in_progress() every ack_wait / 3, so only a dead (or cut off) relay's messages come back.
    ack_wait: float = Field(15.0, ge=1)
    # The JetStream key-value bucket where relays hold partition leases, announce themselves and share what a
    # vendor taught one of them (Humanloop's ids): created (with `replicas`) when missing.
    bucket: str = "shipper-relay"
    replicas: int = Field(3, ge=1, le=5)
    # A relay that has not renewed its membership and leases for this long is taken for dead: its partitions go to
    # the others. Renewed every lease_ttl / 3.
    lease_ttl: float = Field(10.0, ge=1)
    # How long a NATS request (a fetch, an ack, a key-value write) may take before it is tried again.
    timeout: float = Field(2.0, gt=0)

    @field_validator("durable_prefix", "bucket")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError("letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _check_timing(self) -> RelayConfig:
        if self.timeout >= self.ack_wait / 3:
            raise ValueError("timeout must be below ack_wait / 3, so an in_progress() reaches the stream in time")
        if self.timeout >= self.lease_ttl / 3:
            raise ValueError("timeout must be below lease_ttl / 3, so a lease is renewed before it lapses")
        return self
