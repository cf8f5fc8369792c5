"""Completion-like records (~1 KB bodies: messages, model, params, usage, timing) and the requests that carry them.

Bodies are built once from a seeded generator; each record only gets a fresh sequence number (its id and key) by
bytes formatting, so producing tens of thousands of records per second costs the load generator almost nothing.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

SINK = "remote"
BODY_BYTES = 1024
POOL = 32
_SEQ = "__SEQ__"
_VOCABULARY = (
    "the a of to and in is for on with that as by this be are from or it at an which model token latency request "
    "response cache retry user system assistant summary invoice customer order refund policy shipping account "
    "password reset error timeout context window prompt completion json schema field value table query"
)
_WORDS = _VOCABULARY.split()
_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "claude-3-haiku", "llama-3.1-70b", "mistral-large")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def completion_body(rng: random.Random, user_words: int) -> dict[str, Any]:
    prompt, completion = rng.randint(200, 4000), rng.randint(20, 800)
    latency = rng.randint(300, 9000)
    return {
        "id": f"cmpl-{_SEQ}",
        "model": rng.choice(_MODELS),
        "messages": [
            {"role": "system", "content": _text(rng, 18)},
            {"role": "user", "content": _text(rng, user_words)},
        ],
        "output": {"role": "assistant", "content": _text(rng, 40)},
        "params": {"temperature": round(rng.random(), 2), "max_tokens": 1024, "top_p": 1.0},
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "timing": {
            "start_time": "2025-01-15T10:23:45.123Z",
            "end_time": "2025-01-15T10:23:51.456Z",
            "latency_ms": latency,
            "time_to_first_token_ms": latency // 7,
        },
        "metadata": {"session_id": f"sess-{rng.randrange(10**6):06d}", "user_id": f"u{rng.randrange(10**4)}"},
        "cost_usd": round(rng.random() / 100, 6),
    }


def _sized_body(rng: random.Random) -> bytes:
    """A body whose JSON is as close to BODY_BYTES as whole words allow."""
    state = rng.getstate()
    for words in range(10, 200):
        rng.setstate(state)
        body = orjson.dumps(completion_body(rng, words))
        if len(body) >= BODY_BYTES:
            return body
    raise AssertionError("unreachable")


def _template(body: bytes, sink: str, keyed: bool) -> bytes:
    item: dict[str, Any] = {"sink": sink, "method": "POST", "path": "/v1/completions", "body": _SEQ}
    if keyed:
        item["key"] = f"cmpl-{_SEQ}"
    line = orjson.dumps(item).replace(b'"' + _SEQ.encode() + b'"', body)
    return line.replace(b"%", b"%%").replace(_SEQ.encode(), b"%010d") + b"\n"


class Records:
    """`line(seq)` is one NDJSON item, unique by seq (its key), ~1.1 KB on the wire; `keyed=False`: without a key,
    so nothing orders the records (a sink that bundles may store and send many as one)."""

    def __init__(self, seed: int = 7, sink: str = SINK, keyed: bool = True) -> None:
        rng = random.Random(seed)
        bodies = [_sized_body(rng) for _ in range(POOL)]
        self._templates = [_template(body, sink, keyed) for body in bodies]
        self._holes = self._templates[0].count(b"%010d")
        self.body_bytes = sum(map(len, bodies)) // POOL
        self.line_bytes = sum(map(len, self._templates)) // POOL

    def line(self, seq: int) -> bytes:
        return self._templates[seq % POOL] % ((seq,) * self._holes)

    def ndjson_request(self, first: int, count: int) -> bytes:
        body = b"".join([self.line(seq) for seq in range(first, first + count)])
        return frame(body, b"application/x-ndjson")

    def single_request(self, seq: int) -> bytes:
        return frame(self.line(seq), b"application/json")


def frame(body: bytes, content_type: bytes, path: bytes = b"/v1/records") -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: shipper\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (path, content_type, len(body)) + body
