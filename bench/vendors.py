"""(e) memory as deployed: the daemon with the three vendor sinks forwarding and token counting on.

The calls are the vendors' own drop-in paths (Freeplay completions, Humanloop prompt logs, Keywords AI log creates),
one per request as the SDKs send them, each carrying a conversation and a model but no usage, so every record is
counted (tiktoken) and, where the format takes a cost, priced before it is forwarded. The models are the bench's
mix (bench/records.py: gpt-4o*, Claude, Llama, Mistral), so both OpenAI encodings would be needed if the
approximation for other providers used a second one. The figure is the daemon's peak RSS (VmHWM) once every call has
reached the fake remote. The sinks use their own key (a file), as a sidecar configured for one app does.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import orjson

from bench.records import completion_body, frame

POOL = 96
FREEPLAY_PROJECT = "11111111-2222-3333-4444-555555555555"
VENDORS = ("freeplay", "humanloop", "keywordsai")


def sinks_toml(workdir: Path, remote_url: str, vendors: tuple[str, ...] = VENDORS, extra: str = "") -> str:
    """One sink per vendor, all pointed at the fake remote, each with its own key file (and Freeplay's project, for
    spans from the OTLP receiver), and `extra` keys each."""
    lines = []
    for vendor in vendors:
        key = workdir / f"{vendor}.key"
        key.write_text(f"bench-{vendor}-key\n")
        key.chmod(0o600)
        base = f"{remote_url}/api" if vendor == "freeplay" else remote_url
        project = f'project_id = "{FREEPLAY_PROJECT}"\n' if vendor == "freeplay" else ""
        lines.append(
            f'[sinks.{vendor}]\ntype = "{vendor}"\nbase_url = "{base}"\napi_key_file = "{key}"\n{project}{extra}'
        )
    return "\n".join(lines)


def _call(vendor: str, rng: random.Random, n: int) -> tuple[bytes, bytes]:
    """(path, body) of one SDK call without usage, as the vendor's SDK sends it."""
    record = completion_body(rng, rng.randint(20, 120))
    model, messages, reply = record["model"], record["messages"], record["output"]
    if vendor == "freeplay":
        path = f"/api/v2/projects/{FREEPLAY_PROJECT}/sessions/{uuid.UUID(int=rng.getrandbits(128))}/completions"
        body = {"messages": [*messages, reply], "call_info": {"model": model, "provider": "bench"}}
    elif vendor == "humanloop":
        path = "/v5/prompts/log"
        body = {"path": f"bench/prompt-{n % 8}", "prompt": {"model": model}, "messages": messages,
                "output_message": reply, "output": reply["content"]}  # fmt: skip
    else:
        path = "/request-logs/create"
        body = {"model": model, "prompt_messages": messages, "completion_message": reply}
    return path.encode(), orjson.dumps(body)


class VendorCalls:
    """`request(seq)`: one drop-in call, cycling through the vendors and a pool of conversations and models."""

    def __init__(self, seed: int = 11, vendors: tuple[str, ...] = VENDORS) -> None:
        rng = random.Random(seed)
        self._requests = [
            frame(body, b"application/json", path)
            for n in range(POOL)
            for path, body in [_call(vendors[n % len(vendors)], rng, n)]
        ]

    def request(self, seq: int) -> bytes:
        return self._requests[seq % POOL]
