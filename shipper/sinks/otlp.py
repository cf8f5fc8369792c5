"""`type = "otlp"`: the export requests the OTLP receiver took, forwarded whole to an OpenTelemetry endpoint (a
Collector, Keywords AI's or Freeplay's own OTLP intake) with the same retries, backoff and dead letters as any sink.

A row holds one export request as OTLP/JSON (shipper/otlp/wire.py `to_json`): text like every other row's body, so
redaction reads it and `dlq show` prints it (one that no longer parses after redaction is dead-lettered, saying
so). It is sent as protobuf (re-encoded here, unchanged in meaning) or as that JSON, whichever the endpoint wants,
to `base_url` + the row's path (`/v1/traces`, `/v1/logs`). A 2xx is delivered (a `partial_success` in it is the
endpoint's own refusal, which no retry changes); 429 and 5xx are retried with the endpoint's Retry-After, other 4xx
dead-lettered, as the OTLP specification has exporters do. Not responsible for what the spans mean (the vendor
sinks map them) or for retries (the forwarder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shipper.config.sinks import OtlpSinkConfig
from shipper.core.retry import Outcome, Verdict
from shipper.core.rows import SpoolRow
from shipper.otlp import wire
from shipper.records import BadInput
from shipper.sinks.base import Batching, OutRequest
from shipper.sinks.http import authorized, classify_response
from shipper.sinks.transport import HttpTransport

# The signal a row's path names: the message its body is.
SIGNALS: dict[str, type[Message]] = {"/v1/traces": ExportTraceServiceRequest, "/v1/logs": ExportLogsServiceRequest}


class OtlpSink:
    def __init__(self, name: str, config: OtlpSinkConfig, environ: Mapping[str, str]) -> None:
        self.name = name
        self.concurrency = config.concurrency
        self.batching = Batching()  # one export request per send, as the exporter sent it
        self._base_url = config.base_url
        self._encoding = wire.PROTOBUF if config.encoding == "protobuf" else wire.JSON
        self._headers, self._secrets = authorized(name, config, environ)
        self._transport = HttpTransport(config.concurrency, config.timeout, ca_file=config.ca_file, sink=name)

    async def start(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        await self._transport.close()

    def build_request(self, rows: Sequence[SpoolRow]) -> OutRequest:
        (row,) = rows
        body = row.body
        if self._encoding == wire.PROTOBUF:
            body = wire.decode(row.body, wire.JSON, SIGNALS[row.path]).SerializeToString()
        headers = {**self._headers, "Content-Type": self._encoding}
        return OutRequest("POST", self._base_url + row.path, headers, body)

    async def send(self, rows: Sequence[SpoolRow]) -> Outcome:
        try:
            request = self.build_request(rows)
        except BadInput as exc:  # a body redaction made unreadable (a masked id, say): no retry can send it
            return Outcome(Verdict.REJECT, detail=f"the stored export request no longer parses: {exc}")
        return await self._transport.send(
            request,
            lambda status, headers, body: classify_response(status, headers, body, self._secrets),
        )
