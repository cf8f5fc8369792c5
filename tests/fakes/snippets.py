"""The contract's "Snippet" sections (vendors.md), as functions: the official SDKs called the way a user calls them.

Each takes `host` ("127.0.0.1:PORT": a fake upstream, or shipper) and returns what the SDK was told plus the ids it
used, so a test can check them against what the remote stored. Most are synchronous SDK calls: run them in a
thread (`asyncio.to_thread`) when an event loop is serving the other end (`humanloop_entity` is async). The
`*_extras` functions make the calls the contract lists as "code" (read from the SDK, not in the snippet): trace
update, trace feedback and metadata, session delete; tool log update. Humanloop clients get an httpx client with
the SDK's own defaults (60 s timeout, redirects followed), so the wire is the same, but it is closed after use.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from humanloop import AsyncHumanloop, Humanloop

FP_PROJECT = "11111111-2222-3333-4444-555555555555"
FP_KEY = "fp-test-key-123"
HL_KEY = "hl_sk_test_123"
KW_KEY = "kw-test-key-123"
HL_T0 = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@contextlib.contextmanager
def humanloop_client(host: str, key: str = HL_KEY) -> Iterator[Humanloop]:
    """A sync client on an httpx.Client the caller owns (an SDK option), closed with its exporter thread after use."""
    from humanloop import Humanloop

    with httpx.Client(timeout=60, follow_redirects=True) as http:
        hl = Humanloop(api_key=key, base_url=f"http://{host}/v5", httpx_client=http)
        try:
            yield hl
        finally:
            shutdown_tracing(hl)


@contextlib.asynccontextmanager
async def async_humanloop_client(host: str, key: str = HL_KEY) -> AsyncIterator[AsyncHumanloop]:
    from humanloop import AsyncHumanloop

    async with httpx.AsyncClient(timeout=60, follow_redirects=True) as http:
        hl = AsyncHumanloop(api_key=key, base_url=f"http://{host}/v5", httpx_client=http)
        try:
            yield hl
        finally:
            shutdown_tracing(hl)


def shutdown_tracing(client: object) -> None:
    """Constructing a client starts an OpenTelemetry exporter thread (vendors.md "Quirk"); stop it."""
    provider = getattr(client, "_tracer_provider", None)
    if provider is not None:
        provider.shutdown()


def answer_id(answer: Any) -> str:
    """Update answers are a loosely parsed union: a model or, when no member fits, the raw dict."""
    return str(answer["id"] if isinstance(answer, dict) else answer.id)


def freeplay_snippet(
    host: str, key: str = FP_KEY, project: str = FP_PROJECT, send_completion_id: bool = True
) -> dict[str, Any]:
    """vendors.md §1 Snippet, verbatim apart from returning its ids (and optionally leaving completion_id out)."""
    from freeplay import CallInfo, Freeplay, RecordPayload, UsageTokens
    from freeplay.llm_parameters import LLMParameters
    from freeplay.resources.prompts import PromptVersionInfo
    from freeplay.resources.recordings import RecordUpdatePayload

    fp = Freeplay(freeplay_api_key=key, api_base=f"http://{host}/api")
    session = fp.sessions.create(custom_metadata={"user": "u1"})
    trace = session.create_trace(input="What is 2+2?", agent_name="calc", kind="agent", name="calc-agent")
    msgs = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    cid = uuid.uuid4()
    t0 = time.time()
    payload = RecordPayload(
        project_id=project,
        all_messages=msgs,
        session_info=session.session_info,
        inputs={"question": "What is 2+2?"},
        completion_id=cid if send_completion_id else None,
        parent_id=uuid.UUID(trace.trace_id),
        prompt_version_info=PromptVersionInfo(prompt_template_version_id="pv-1", environment="latest"),
        call_info=CallInfo(
            provider="openai",
            model="gpt-4o-mini",
            start_time=t0,
            end_time=t0 + 0.5,
            model_parameters=LLMParameters({"temperature": 0.2}),
            usage=UsageTokens(12, 1),
        ),
    )
    res = fp.recordings.create(payload)
    upd = fp.recordings.update(
        RecordUpdatePayload(
            project_id=project,
            completion_id=res.completion_id,
            new_messages=[{"role": "user", "content": "thanks"}],
            eval_results={"correct": True},
        )
    )
    fp.customer_feedback.update(project, res.completion_id, {"thumbs_up": True, "comment": "good"})
    tool = session.create_trace(input={"a": 2, "b": 2}, kind="tool", name="add", parent_id=uuid.UUID(trace.trace_id))
    tool.record_output(project, output={"sum": 4})
    trace.record_output(project, output="4", eval_results={"ok": 1.0})
    fp.metadata.update_session(project, session.session_id, {"ticket": "T-1"})
    return {
        "project_id": project,
        "session_id": session.session_id,
        "trace_id": trace.trace_id,
        "tool_trace_id": tool.trace_id,
        "sent_completion_id": str(cid) if send_completion_id else None,
        "completion_id": str(res.completion_id),
        "update_completion_id": str(upd.completion_id),
        "t0": t0,
    }


def freeplay_extras(host: str, ids: dict[str, Any], key: str = FP_KEY) -> None:
    """The calls vendors.md lists as code-only, on the entities the snippet made; session delete last."""
    from freeplay import Freeplay
    from freeplay.resources.traces import TraceUpdatePayload

    fp = Freeplay(freeplay_api_key=key, api_base=f"http://{host}/api")
    project, session_id, trace_id = ids["project_id"], ids["session_id"], ids["trace_id"]
    fp.traces.update(TraceUpdatePayload(project, session_id, trace_id, output="four", metadata={"stage": "final"}))
    fp.customer_feedback.update_trace(project, trace_id, {"thumbs_up": False})
    fp.metadata.update_trace(project, session_id, trace_id, {"reviewed": True})
    fp.sessions.delete(project, session_id)


def freeplay_entity(
    host: str, key: str = FP_KEY, project: str = FP_PROJECT, api_base: str | None = None
) -> dict[str, Any]:
    """One completion with its update and feedback: the unit of the concurrency and ordering tests."""
    from freeplay import Freeplay, RecordPayload
    from freeplay.resources.recordings import RecordUpdatePayload

    fp = Freeplay(freeplay_api_key=key, api_base=api_base or f"http://{host}/api")
    session = fp.sessions.create()
    cid = str(uuid.uuid4())
    res = fp.recordings.create(
        RecordPayload(
            project_id=project,
            all_messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            session_info=session.session_info,
            completion_id=uuid.UUID(cid),
        )
    )
    fp.recordings.update(
        RecordUpdatePayload(project_id=project, completion_id=res.completion_id, new_messages=[], eval_results={})
    )
    fp.customer_feedback.update(project, res.completion_id, {"thumbs_up": True})
    return {"session_id": session.session_id, "completion_id": str(res.completion_id), "sent_completion_id": cid}


def humanloop_snippet(host: str, key: str = HL_KEY) -> dict[str, Any]:
    """vendors.md §2 Snippet, verbatim apart from returning what the SDK was told."""
    with humanloop_client(host, key) as hl:
        return _humanloop_snippet(hl)


def _humanloop_snippet(hl: Humanloop) -> dict[str, Any]:
    t0 = HL_T0
    log = hl.prompts.log(
        path="demo/calc-prompt",
        version_id="prv_abc",
        environment="production",
        prompt={"model": "gpt-4o-mini", "template": [{"role": "system", "content": "Be terse"}], "temperature": 0.2},
        messages=[{"role": "user", "content": "What is 2+2?"}],
        output_message={"role": "assistant", "content": "4"},
        output="4",
        inputs={"question": "What is 2+2?"},
        prompt_tokens=12,
        output_tokens=1,
        start_time=t0,
        end_time=t0 + dt.timedelta(seconds=0.5),
        metadata={"user": "u1"},
        log_status="incomplete",
    )
    upd = hl.prompts.update_log(id=log.prompt_id, log_id=log.id, output="four", log_status="complete")
    flow = hl.flows.log(path="demo/calc-flow", inputs={"q": "2+2"}, log_status="incomplete")
    tool = hl.tools.log(
        path="demo/add",
        tool={"function": {"name": "add", "parameters": {}}},
        inputs={"a": 2, "b": 2},
        output="4",
        trace_parent_id=flow.id,
    )
    flow_upd = hl.flows.update_log(log_id=flow.id, output="4", log_status="complete")
    return {
        "log_id": log.id,
        "prompt_id": log.prompt_id,
        "prompt_version_id": log.version_id,
        "update_id": answer_id(upd),
        "flow_log_id": flow.id,
        "flow_id": flow.flow_id,
        "tool_log_id": tool.id,
        "tool_id": tool.tool_id,
        "flow_update_id": answer_id(flow_upd),
    }


def humanloop_extras(host: str, ids: dict[str, Any], key: str = HL_KEY) -> None:
    """`tools.update` (code-only in vendors.md) on the snippet's tool log."""
    with humanloop_client(host, key) as hl:
        hl.tools.update(id=ids["tool_id"], log_id=ids["tool_log_id"], output="5", log_status="complete")


async def humanloop_entity(hl: AsyncHumanloop, n: int) -> dict[str, Any]:
    """A prompt log and its update through the async client: many run concurrently on one event loop."""
    log = await hl.prompts.log(path=f"load/prompt-{n % 4}", output=f"o{n}", log_status="incomplete")
    await hl.prompts.update_log(id=log.prompt_id, log_id=log.id, output=f"final{n}", log_status="complete")
    return {"log_id": log.id, "prompt_id": log.prompt_id, "path": f"load/prompt-{n % 4}"}


def keywords_snippet(host: str, key: str = KW_KEY, suffix: str = "/api") -> dict[str, Any]:
    """vendors.md §3 Snippet: `create()` (sync, asyncio.run inside), `acreate()`, and the update the SDK refuses."""
    from keywordsai import LogAPI
    from keywordsai.types.log_types import KeywordsAILogParams

    logs = LogAPI(api_key=key, base_url=f"http://{host}{suffix}")
    params = KeywordsAILogParams(
        model="gpt-4o-mini",
        custom_identifier="calc-001",
        customer_identifier="u1",
        prompt_messages=[{"role": "user", "content": "What is 2+2?"}],
        completion_message={"role": "assistant", "content": "4"},
        prompt_tokens=12,
        completion_tokens=1,
        latency=0.5,
        status_code=200,
        timestamp=dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC),
        metadata={"env": "test"},
        thread_identifier="thread-1",
        trace_unique_id="trace-1",
        span_name="calc",
    )
    created = logs.create(params)
    acreated = asyncio.run(logs.acreate({"model": "gpt-4o-mini", "input": "hi", "output": "hello"}))
    try:
        logs.update("some-id", {"output": "x"})
    except NotImplementedError as exc:
        refused = type(exc).__name__
    else:
        refused = None
    return {"create": created, "acreate": acreated, "update": refused}


def close_freeplay_session() -> None:
    """The Freeplay SDK keeps one module-level requests.Session; close its pooled sockets after a test."""
    from freeplay import api_support

    api_support._session.close()
