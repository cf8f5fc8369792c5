"""(o) the OTLP/HTTP receiver: export requests of 100 LLM spans (protobuf, as the SDK's exporter sends them) into the
spool, beside (a)'s NDJSON batches of 100 records.

Each span is a chat call in the new GenAI convention with a ~1 KB conversation (bench/records.py's), its usage and
parameters, under one agent span per request, as an instrumented app's batch processor exports them. The routed
vendor sinks (Freeplay, Humanloop, Keywords AI) point at a port nobody listens on and back off for an hour, so the
figure is the receiver alone: parse, map each span to three vendor records, commit, answer. A pool of requests with
distinct trace and span ids is built once and cycled, so the load generator only writes bytes.
"""

from __future__ import annotations

import random

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bench.records import completion_body, frame

SPANS = 100  # per export request
POOL = 64
START_NS = 1_795_347_092_746_000_000


def _pairs(attrs: dict[str, object]) -> list[KeyValue]:
    out = []
    for key, item in attrs.items():
        if isinstance(item, int):
            out.append(KeyValue(key=key, value=AnyValue(int_value=item)))
        elif isinstance(item, float):
            out.append(KeyValue(key=key, value=AnyValue(double_value=item)))
        else:
            out.append(KeyValue(key=key, value=AnyValue(string_value=str(item))))
    return out


def _chat(rng: random.Random) -> dict[str, object]:
    record = completion_body(rng, rng.randint(40, 120))
    system, user = record["messages"]
    parts = lambda text: [{"type": "text", "content": text}]  # noqa: E731
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": record["model"],
        "gen_ai.response.model": record["model"], "gen_ai.request.temperature": record["params"]["temperature"],
        "gen_ai.usage.input_tokens": record["usage"]["prompt_tokens"],
        "gen_ai.usage.output_tokens": record["usage"]["completion_tokens"],
        "gen_ai.system_instructions": orjson.dumps(parts(system["content"])).decode(),
        "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": parts(user["content"])}]).decode(),
        "gen_ai.output.messages": orjson.dumps(
            [{"role": "assistant", "parts": parts(record["output"]["content"]), "finish_reason": "stop"}]
        ).decode(),
    }  # fmt: skip


def export_request(rng: random.Random) -> bytes:
    """One export request: an agent span and `SPANS - 1` chat spans under it, one trace."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.extend(_pairs({"service.name": "bench-app"}))
    spans = resource.scope_spans.add().spans
    trace, agent = rng.randbytes(16), rng.randbytes(8)
    for index in range(SPANS):
        root = index == SPANS - 1  # the agent ends last, so the SDK lists it last
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench"} if root else _chat(rng)
        span = Span(trace_id=trace, name="invoke_agent bench" if root else "chat", kind=Span.SPAN_KIND_CLIENT)
        span.span_id, span.parent_span_id = (agent, b"") if root else (rng.randbytes(8), agent)
        span.start_time_unix_nano, span.end_time_unix_nano = START_NS, START_NS + 500_000_000
        span.attributes.extend(_pairs(attrs))
        spans.append(span)
    return request.SerializeToString()


class ExportRequests:
    """`request(seq)`: one `POST /v1/traces` of SPANS spans, cycling through a pool of distinct requests."""

    def __init__(self, seed: int = 13) -> None:
        rng = random.Random(seed)
        bodies = [export_request(rng) for _ in range(POOL)]
        self.body_bytes = sum(map(len, bodies)) // POOL
        self._requests = [frame(body, b"application/x-protobuf", b"/v1/traces") for body in bodies]

    def request(self, seq: int) -> bytes:
        return self._requests[(seq // SPANS) % POOL]
