"""The fake vendor upstreams, driven directly by the official SDKs: each behaves as vendors.md says the vendor does.

If these fail, a failing e2e vendor test says nothing about shipper. Keywords AI is the exception that proves the
rule: the fake serves only the *documented* path, so the SDK pointed straight at it gets 404 (as it might at the
real service); the SDK's exact request replayed to the documented path is accepted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import httpx
import pytest

from tests.fakes import (
    BAD_REQUEST,
    RATE_LIMITED,
    RESET,
    TOO_LARGE,
    UNAVAILABLE,
    Fault,
    FreeplayFake,
    HumanloopFake,
    KeywordsAIFake,
)
from tests.fakes import snippets as sdk

FP_BASE = f"/api/v2/projects/{sdk.FP_PROJECT}"


def host(fake: Any) -> str:
    return f"127.0.0.1:{fake.port}"


# -- Freeplay -------------------------------------------------------------------------------------------------


async def test_freeplay_snippet_against_fake_sends_the_observed_wire_requests(fp_fake: FreeplayFake) -> None:
    ids = await asyncio.to_thread(sdk.freeplay_snippet, host(fp_fake))

    session, trace, tool, cid = ids["session_id"], ids["trace_id"], ids["tool_trace_id"], ids["sent_completion_id"]
    assert ids["completion_id"] == cid == ids["update_completion_id"]  # the client's id echoed
    assert [(r.method, r.path, r.status) for r in fp_fake.received] == [
        ("POST", f"{FP_BASE}/sessions/{session}/completions", 200),
        ("POST", f"{FP_BASE}/completions/{cid}", 200),
        ("POST", f"{FP_BASE}/completion-feedback/id/{cid}", 201),
        ("POST", f"{FP_BASE}/sessions/{session}/traces/id/{tool}", 201),
        ("POST", f"{FP_BASE}/sessions/{session}/traces/id/{trace}", 201),
        ("PATCH", f"{FP_BASE}/sessions/id/{session}/metadata", 200),
    ]
    create = fp_fake.received[0].body
    assert create["completion_id"] == cid and create["parent_id"] == trace
    assert create["call_info"]["usage"] == {"prompt_tokens": 12, "completion_tokens": 1}
    assert fp_fake.completions[cid].updates == [
        {"new_messages": [{"role": "user", "content": "thanks"}], "eval_results": {"correct": True}}
    ]
    assert fp_fake.received[3].body["parent_id"] == trace and fp_fake.received[3].body["kind"] == "tool"
    assert fp_fake.session_metadata[session] == [{"ticket": "T-1"}]
    assert all(r.headers["Authorization"] == "Bearer fp-test-key-123" for r in fp_fake.received)
    assert fp_fake.violations == [] and fp_fake.rejected() == []


async def test_freeplay_fake_mints_a_completion_id_when_the_client_sends_none(fp_fake: FreeplayFake) -> None:
    ids = await asyncio.to_thread(sdk.freeplay_snippet, host(fp_fake), send_completion_id=False)

    assert "completion_id" not in fp_fake.received[0].body
    assert uuid.UUID(ids["completion_id"]).version == 4
    assert fp_fake.operations(ids["completion_id"]) == ["completion.create", "completion.update", "completion.feedback"]


async def test_freeplay_code_only_calls_get_their_exact_status_codes(fp_fake: FreeplayFake) -> None:
    ids = await asyncio.to_thread(sdk.freeplay_snippet, host(fp_fake))
    await asyncio.to_thread(sdk.freeplay_extras, host(fp_fake), ids)

    session, trace = ids["session_id"], ids["trace_id"]
    assert [(r.method, r.path, r.status) for r in fp_fake.received[6:]] == [
        ("PATCH", f"{FP_BASE}/sessions/{session}/traces/id/{trace}", 200),
        ("POST", f"{FP_BASE}/trace-feedback/id/{trace}", 201),
        ("PATCH", f"{FP_BASE}/sessions/{session}/traces/id/{trace}/metadata", 200),
        ("DELETE", f"{FP_BASE}/sessions/{session}", 201),
    ]
    assert fp_fake.received[6].body == {"output": "four", "metadata": {"stage": "final"}}
    assert fp_fake.violations == []


async def test_freeplay_fake_refuses_an_update_before_its_create_and_records_it(fp_fake: FreeplayFake) -> None:
    from freeplay import Freeplay
    from freeplay.errors import FreeplayError
    from freeplay.resources.recordings import RecordUpdatePayload

    fp = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"http://{host(fp_fake)}/api")
    cid = str(uuid.uuid4())
    payload = RecordUpdatePayload(project_id=sdk.FP_PROJECT, completion_id=cid, new_messages=[], eval_results={})
    with pytest.raises(FreeplayError):
        await asyncio.to_thread(fp.recordings.update, payload)
    with pytest.raises(FreeplayError):
        await asyncio.to_thread(fp.metadata.update_session, sdk.FP_PROJECT, str(uuid.uuid4()), {"a": 1})
    assert len(fp_fake.violations) == 2 and cid in fp_fake.violations[0]
    assert fp_fake.received == []


async def test_freeplay_reads_prompt_templates_and_creates_test_runs(fp_fake: FreeplayFake) -> None:
    from freeplay import Freeplay
    from freeplay.errors import FreeplayError

    fp = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"http://{host(fp_fake)}/api")
    template = await asyncio.to_thread(fp.prompts.get, sdk.FP_PROJECT, "calc", "latest")
    assert template.prompt_info.model == "gpt-4o-mini"
    assert template.prompt_info.prompt_template_version_id == "tplv-calc"
    run = await asyncio.to_thread(fp.test_runs.create, sdk.FP_PROJECT, "golden", name="nightly")
    assert [case.id for case in run.get_test_cases()] == ["tc-1"]
    results = await asyncio.to_thread(fp.test_runs.get, sdk.FP_PROJECT, run.test_run_id)
    assert results.name == "nightly"
    with pytest.raises(FreeplayError):
        await asyncio.to_thread(fp.prompts.get, sdk.FP_PROJECT, "missing", "latest")
    get = fp_fake.attempts[0]
    assert get.path == f"{FP_BASE}/prompt-templates/name/calc" and get.query == {"environment": "latest"}
    assert [r.status for r in fp_fake.attempts] == [200, 201, 200, 404]


# -- Humanloop ------------------------------------------------------------------------------------------------


async def test_humanloop_snippet_against_fake_gets_server_assigned_ids(hl_fake: HumanloopFake) -> None:
    ids = await asyncio.to_thread(sdk.humanloop_snippet, host(hl_fake))
    await asyncio.to_thread(sdk.humanloop_extras, host(hl_fake), ids)

    assert ids["prompt_id"] == hl_fake.file_id("prompt", "demo/calc-prompt") and ids["prompt_id"].startswith("pr_")
    assert ids["flow_id"] == hl_fake.file_id("flow", "demo/calc-flow")
    assert ids["tool_id"] == hl_fake.file_id("tool", "demo/add")
    assert ids["prompt_version_id"].startswith("prv_") and ids["prompt_version_id"] != "prv_abc"
    assert [(r.method, r.path, r.query) for r in hl_fake.received] == [
        ("POST", "/v5/prompts/log", {"version_id": "prv_abc", "environment": "production"}),
        ("PATCH", f"/v5/prompts/{ids['prompt_id']}/log/{ids['log_id']}", {}),
        ("POST", "/v5/flows/log", {}),
        ("POST", "/v5/tools/log", {}),
        ("PATCH", f"/v5/flows/logs/{ids['flow_log_id']}", {}),
        ("PATCH", f"/v5/tools/{ids['tool_id']}/log/{ids['tool_log_id']}", {}),
    ]
    assert hl_fake.received[0].body["start_time"] == "2025-01-01T12:00:00Z"
    assert hl_fake.received[3].body["trace_parent_id"] == ids["flow_log_id"]
    assert hl_fake.logs[ids["log_id"]].updates == [{"output": "four", "log_status": "complete"}]
    assert all(r.headers["X-API-KEY"] == sdk.HL_KEY for r in hl_fake.received)
    assert hl_fake.violations == [] and hl_fake.unknown_trace_parents == [] and hl_fake.rejected() == []


async def test_humanloop_fake_honours_a_client_log_id(hl_fake: HumanloopFake) -> None:
    from humanloop import AsyncHumanloop

    async with httpx.AsyncClient() as http:
        hl = AsyncHumanloop(api_key=sdk.HL_KEY, base_url=f"http://{host(hl_fake)}/v5/", httpx_client=http)
        try:
            log = await hl.prompts.log(path="p", output="o", log_id="client-log-1")
        finally:
            sdk.shutdown_tracing(hl)
    assert log.id == "client-log-1"
    assert hl_fake.received[0].body == {"path": "p", "output": "o", "log_id": "client-log-1"}
    assert hl_fake.logs["client-log-1"].file_id == log.prompt_id


async def test_humanloop_fake_refuses_placeholder_ids_and_unknown_logs(hl_fake: HumanloopFake) -> None:
    from humanloop.core.api_error import ApiError

    def calls() -> None:
        with sdk.humanloop_client(host(hl_fake)) as hl:
            log = hl.prompts.log(path="demo/p", output="o")
            with pytest.raises(ApiError) as wrong_prompt:
                hl.prompts.update_log(id="pr_placeholder", log_id=log.id, output="x")
            assert wrong_prompt.value.status_code == 404
            with pytest.raises(ApiError) as unknown_log:
                hl.flows.update_log(log_id="log_never_created", output="x")
            assert unknown_log.value.status_code == 404

    await asyncio.to_thread(calls)
    assert len(hl_fake.violations) == 2
    assert "pr_placeholder" in hl_fake.violations[0] and "log_never_created" in hl_fake.violations[1]


async def test_humanloop_fake_lists_prompts(hl_fake: HumanloopFake) -> None:
    def calls() -> list[str]:
        with sdk.humanloop_client(host(hl_fake)) as hl:
            for n in range(3):
                hl.prompts.log(path=f"dir/p{n}", output="o")
            return [prompt.id for prompt in hl.prompts.list(size=2)]

    listed = await asyncio.to_thread(calls)
    assert listed == [hl_fake.file_id("prompt", f"dir/p{n}") for n in range(3)]
    pages = [r.query for r in hl_fake.attempts if r.method == "GET"]
    assert pages == [{"page": str(n), "size": "2"} for n in (1, 2, 3)]  # the SDK pages until an empty page


# -- Keywords AI ----------------------------------------------------------------------------------------------


async def test_keywords_sdk_path_is_not_the_documented_one_the_fake_serves(kw_fake: KeywordsAIFake) -> None:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await asyncio.to_thread(sdk.keywords_snippet, host(kw_fake))
    assert refused.value.response.status_code == 404
    sent = kw_fake.attempts[0]
    assert (sent.method, sent.path, sent.status) == ("POST", "/request-logs/create", 404)
    assert sent.body["session_identifier"] == "thread-1" and sent.body["encoding_format"] == "float"

    # The SDK's exact request, replayed to the documented path, is what the real API takes.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{kw_fake.url}/api/request-logs/create/",
            data=sent.raw,
            headers={k: sent.headers[k] for k in ("Authorization", "Content-Type")},
        ) as response,
    ):
        assert response.status == 200 and await response.json() == {"message": "log successful"}
    assert [log["custom_identifier"] for log in kw_fake.logs.values()] == ["calc-001"]


async def test_keywords_fake_lists_gets_and_updates_logs(kw_fake: KeywordsAIFake) -> None:
    from keywordsai.types.log_types import KeywordsAIFullLogParams, LogList

    auth = {"Authorization": f"Bearer {sdk.KW_KEY}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        for n in range(3):
            body = {"model": "gpt-4o-mini", "input": "hi", "output": str(n), "unique_id": f"u{n}"}
            async with session.post(f"{kw_fake.url}/api/request-logs/create/", json=body) as response:
                assert response.status == 200
        async with session.get(f"{kw_fake.url}/api/request-logs/list", params={"page_size": "2"}) as response:
            page = LogList(**await response.json())
        async with session.get(f"{kw_fake.url}/api/request-logs/u1") as response:
            one = KeywordsAIFullLogParams(**await response.json())
        async with session.patch(f"{kw_fake.url}/api/request-logs/u1/", json={"note": "checked"}) as response:
            assert response.status == 200
        async with session.patch(f"{kw_fake.url}/api/request-logs/nope/", json={"note": "x"}) as response:
            assert response.status == 404
    assert page.count == 3 and len(page.results) == 2 and page.next is not None
    assert one.output == "1" and kw_fake.logs["u1"]["note"] == "checked"
    assert kw_fake.operations("u1") == ["log.create", "log.update"] and len(kw_fake.violations) == 1


# -- strictness shared by all fakes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fake_type", "path", "auth"),
    [
        (FreeplayFake, f"{FP_BASE}/sessions/s1/completions", ("Authorization", f"Bearer {sdk.FP_KEY}")),
        (HumanloopFake, "/v5/prompts/log", ("X-API-KEY", sdk.HL_KEY)),
        (KeywordsAIFake, "/api/request-logs/create/", ("Authorization", f"Bearer {sdk.KW_KEY}")),
    ],
    ids=["freeplay", "humanloop", "keywordsai"],
)
async def test_fakes_are_strict_about_paths_methods_auth_and_bodies(
    fake_type: type[FreeplayFake | HumanloopFake | KeywordsAIFake], path: str, auth: tuple[str, str]
) -> None:
    good = {"messages": [{"role": "user", "content": "x"}], "path": "p", "model": "m"}
    async with fake_type() as fake, aiohttp.ClientSession() as session:

        async def status(method: str, url_path: str, headers: dict[str, str], **kw: Any) -> int:
            url = f"http://127.0.0.1:{fake.port}{url_path}"
            async with session.request(method, url, headers=headers, **kw) as r:
                await r.read()
                return r.status

        key = {auth[0]: auth[1]}
        assert await status("POST", path, key, json=good) in (200, 201)
        assert await status("POST", path + "/extra", key, json=good) == 404
        assert await status("PUT", path, key, json=good) == 405
        assert await status("POST", path, {}, json=good) == 401
        assert await status("POST", path, {auth[0]: auth[1] + "x"}, json=good) == 401
        assert await status("POST", path, {**key, "Content-Type": "application/json"}, data=b"{not json") == 400
        assert await status("POST", path, {**key, "Content-Type": "text/plain"}, data=b"{}") == 415
    assert len(fake.received) == 1 and len(fake.rejected()) == 6


async def test_fake_faults_answer_as_scripted_then_recover(kw_fake: KeywordsAIFake) -> None:
    url = f"{kw_fake.url}/api/request-logs/create/"
    auth = {"Authorization": f"Bearer {sdk.KW_KEY}"}
    for fault in (UNAVAILABLE, RATE_LIMITED, BAD_REQUEST, TOO_LARGE):
        kw_fake.fail(fault, times=1)
    kw_fake.fail(RESET, times=1)
    kw_fake.fail(Fault(delay=0.3), times=1)
    seen: list[Any] = []
    async with aiohttp.ClientSession(headers=auth) as session:
        for n in range(7):
            try:
                started = time.monotonic()
                async with session.post(url, json={"n": n}) as response:
                    seen.append((response.status, response.headers.get("Retry-After"), time.monotonic() - started))
            except aiohttp.ClientOSError:
                seen.append(("reset", None, 0.0))
    assert [s[:2] for s in seen] == [
        (503, None), (429, "0"), (400, None), (413, None), ("reset", None), (200, None), (200, None)
    ]  # fmt: skip
    assert seen[5][2] >= 0.3
    assert [r.body["n"] for r in kw_fake.received] == [5, 6]
    assert kw_fake.rejected() == [] and len(kw_fake.faulted) == 5


async def test_fake_chaos_is_seeded_and_matches_only_chosen_requests() -> None:
    async def run(seed: int) -> list[int]:
        async with HumanloopFake() as fake, aiohttp.ClientSession(headers={"X-API-KEY": sdk.HL_KEY}) as session:
            fake.chaos(0.5, [UNAVAILABLE], seed=seed, match=lambda s: s.method == "POST")
            out = []
            for n in range(40):
                async with session.post(f"{fake.url}/prompts/log", json={"path": "p", "log_id": f"l{n}"}) as r:
                    out.append(r.status)
            async with session.get(f"{fake.url}/prompts") as r:
                out.append(r.status)
            return out

    first, again, other = await run(7), await run(7), await run(8)
    assert first == again != other
    assert 8 <= first.count(503) <= 32 and first[-1] == 200


async def test_fake_stops_refusing_connections_and_restarts_on_the_same_port_with_its_data(
    fp_fake: FreeplayFake,
) -> None:
    from freeplay import Freeplay

    fp = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"{fp_fake.url}")
    ids = await asyncio.to_thread(sdk.freeplay_snippet, host(fp_fake))
    await fp_fake.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"{fp_fake.url}/v2/projects/all")
    await fp_fake.start()
    await asyncio.to_thread(fp.metadata.update_session, sdk.FP_PROJECT, ids["session_id"], {"after": "restart"})
    assert fp_fake.session_metadata[ids["session_id"]][-1] == {"after": "restart"} and fp_fake.starts == 2
