"""How the SDK tests compare what a fake vendor received through shipper with what the SDK sent straight to a
reference fake: run-specific ids named, timestamps blanked, in a stable order; and which key and content type each
request carried. Not responsible for running the SDKs (snippets.py) or for the fakes' own checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from tests.fakes.base import Seen
from tests.fakes.humanloop import HumanloopFake

TIME_KEYS = frozenset({"start_time", "end_time"})


def host_of(fake: Any) -> str:
    return f"127.0.0.1:{fake.port}"


def _replace(value: Any, ids: dict[str, str], drop: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: "<time>" if k in TIME_KEYS and v is not None else _replace(v, ids, drop)
            for k, v in value.items()
            if k not in drop
        }
    if isinstance(value, list):
        return [_replace(v, ids, drop) for v in value]
    if isinstance(value, str):
        return ids.get(value, value)
    return value


def normalized(requests: Iterable[Seen], ids: dict[str, str], drop: frozenset[str] = frozenset()) -> list[tuple]:
    """Requests with run-specific ids replaced by names and timestamps blanked, in a stable order."""
    out = []
    for seen in requests:
        path = seen.path
        for real, name in ids.items():
            path = path.replace(real, name)
        body = orjson.dumps(_replace(seen.body, ids, drop), option=orjson.OPT_SORT_KEYS).decode()
        out.append((seen.method, path, tuple(sorted(seen.query.items())), body))
    return sorted(out)


def assert_json_and_key(requests: Iterable[Seen], header: str, value: str) -> None:
    for seen in requests:
        assert seen.headers.get(header) == value, (seen.method, seen.path, header)
        if seen.method in ("POST", "PATCH"):
            assert seen.headers["Content-Type"].split(";")[0] == "application/json"


def fp_ids(run: dict[str, Any]) -> dict[str, str]:
    return {
        run["session_id"]: "<session>",
        run["trace_id"]: "<trace>",
        run["tool_trace_id"]: "<tool>",
        run["completion_id"]: "<completion>",
    }


def hl_ids(fake: HumanloopFake, run: dict[str, Any]) -> dict[str, str]:
    files = {
        fake.file_id("prompt", "demo/calc-prompt"): "<prompt>",
        fake.file_id("flow", "demo/calc-flow"): "<flow>",
        fake.file_id("tool", "demo/add"): "<tool>",
    }
    logs = {run["log_id"]: "<log>", run["flow_log_id"]: "<flow-log>", run["tool_log_id"]: "<tool-log>"}
    return {k: v for k, v in {**files, **logs}.items() if k is not None}
