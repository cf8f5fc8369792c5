"""The official SDKs pointed at shipper (a subprocess), shipper forwarding to strict fake vendors.

Each vendor's contract snippet (vendors.md) runs twice: once straight at a reference fake, once through shipper. The
remote must receive the same requests either way (method, upstream path, query, body, auth), apart from what
shipper is meant to add (the ids it mints) and reorder (per-entity dependencies). Reads whose answer only the
vendor has are proxied: passed through as they are, 502 when the vendor is unreachable, 504 when it is silent.
Ordering, faults, dead letters and secrets are in test_vendor_ordering.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from shipper.spool.reader import SpoolReader, read
from tests.fakes import Fault, FreeplayFake, HumanloopFake, KeywordsAIFake
from tests.fakes import snippets as sdk
from tests.fakes.compare import assert_json_and_key, fp_ids, hl_ids, host_of, normalized
from tests.fakes.humanloop import File
from tests.fakes.rig import FP_SINK_KEY, HL_SINK_KEY, KW_SINK_KEY, Rig, vendor_rig
from tests.support import wait_for

FP_BASE = f"/api/v2/projects/{sdk.FP_PROJECT}"
KW_DOCUMENTED = "/api/request-logs/create/"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with vendor_rig(tmp_path) as running:
        yield running


# -- Freeplay -------------------------------------------------------------------------------------------------


async def test_freeplay_sdk_through_shipper_reaches_freeplay_as_if_sent_directly(rig: Rig) -> None:
    async with FreeplayFake() as reference:
        direct = await asyncio.to_thread(sdk.freeplay_snippet, host_of(reference))
        shipped = await asyncio.to_thread(sdk.freeplay_snippet, rig.host)
        await wait_for(lambda: len(rig.fp.received) >= 6)

    assert shipped["completion_id"] == shipped["sent_completion_id"] == shipped["update_completion_id"]
    assert normalized(rig.fp.received, fp_ids(shipped)) == normalized(reference.received, fp_ids(direct))
    cid, session = shipped["completion_id"], shipped["session_id"]
    assert rig.fp.completions[cid].body["completion_id"] == cid
    assert rig.fp.completions[cid].body["call_info"]["start_time"] == shipped["t0"]
    assert rig.fp.operations(cid) == ["completion.create", "completion.update", "completion.feedback"]
    assert rig.fp.session_metadata[session] == [{"ticket": "T-1"}]
    assert_json_and_key(rig.fp.received, "Authorization", f"Bearer {sdk.FP_KEY}")
    assert rig.fp.violations == [] and rig.fp.rejected() == [] and rig.fp.duplicates == 0


async def test_freeplay_completion_id_minted_by_shipper_is_the_one_freeplay_stores(rig: Rig) -> None:
    shipped = await asyncio.to_thread(sdk.freeplay_snippet, rig.host, send_completion_id=False)
    cid = shipped["completion_id"]
    await wait_for(lambda: rig.fp.operations(cid)[-1:] == ["completion.feedback"])

    assert uuid.UUID(cid).version == 4 and shipped["update_completion_id"] == cid
    create = rig.fp.accepted("POST", f"{FP_BASE}/sessions/{shipped['session_id']}/completions")
    assert [r.body["completion_id"] for r in create] == [cid]
    assert rig.fp.operations(cid) == ["completion.create", "completion.update", "completion.feedback"]
    assert rig.fp.violations == []


async def test_freeplay_code_only_calls_through_shipper_get_exact_codes_and_arrive_in_order(rig: Rig) -> None:
    # The SDK raises unless trace PATCH / metadata PATCH answer exactly 200 and feedback / DELETE exactly 201.
    # Slow trace feedback and trace metadata down, so a DELETE sent without waiting for them surely overtakes them.
    slow = Fault(delay=0.3)
    rig.fp.fail(slow, match=lambda seen: "/trace-feedback/" in seen.path or seen.path.endswith("/metadata"))
    shipped = await asyncio.to_thread(sdk.freeplay_snippet, rig.host)
    await asyncio.to_thread(sdk.freeplay_extras, rig.host, shipped)
    session, trace = shipped["session_id"], shipped["trace_id"]
    # The DELETE is the app's last call: whatever the app sent before it about the session must land first.
    await wait_for(
        lambda: session in rig.fp.deleted_sessions and (len(rig.fp.operations(trace)) == 4 or rig.fp.violations)
    )

    assert rig.fp.violations == []
    assert rig.fp.operations(trace) == ["trace.record", "trace.update", "trace.feedback", "trace.metadata"]
    assert rig.fp.traces[trace].updates == [{"output": "four", "metadata": {"stage": "final"}}]
    assert rig.fp.traces[trace].feedback == [{"thumbs_up": False}]
    assert rig.fp.traces[trace].metadata == [{"reviewed": True}]
    assert rig.fp.events[-1][1:] == ("session.delete", session)  # after everything else in the session
    assert rig.fp.violations == [] and rig.fp.rejected() == []


@pytest.mark.parametrize("api_base", ["http://{host}/api/", "http://{host}", "http://{host}/"], ids=str)
async def test_freeplay_paths_without_api_or_with_doubled_slashes_are_forwarded_canonically(
    rig: Rig, api_base: str
) -> None:
    shipped = await asyncio.to_thread(sdk.freeplay_entity, rig.host, api_base=api_base.format(host=rig.host))
    cid = shipped["completion_id"]
    await wait_for(lambda: len(rig.fp.operations(cid)) == 3)

    assert [r.path for r in rig.fp.received] == [
        f"{FP_BASE}/sessions/{shipped['session_id']}/completions",
        f"{FP_BASE}/completions/{cid}",
        f"{FP_BASE}/completion-feedback/id/{cid}",
    ]
    assert rig.fp.violations == []


# -- Humanloop ------------------------------------------------------------------------------------------------


async def test_humanloop_sdk_through_shipper_reaches_humanloop_as_if_sent_directly(rig: Rig) -> None:
    async with HumanloopFake() as reference:
        direct = await asyncio.to_thread(sdk.humanloop_snippet, host_of(reference))
        await asyncio.to_thread(sdk.humanloop_extras, host_of(reference), direct)
        shipped = await asyncio.to_thread(sdk.humanloop_snippet, rig.host)
        await asyncio.to_thread(sdk.humanloop_extras, rig.host, shipped)
        await wait_for(lambda: len(rig.hl.received) >= 6)

    # log_id is the one thing shipper adds: the id it told the SDK, so the remote stores that same id.
    log_ids = frozenset({"log_id"})
    assert normalized(rig.hl.received, hl_ids(rig.hl, shipped), log_ids) == normalized(
        reference.received, hl_ids(reference, direct), log_ids
    )
    creates = [r for r in rig.hl.received if r.method == "POST"]
    assert sorted(r.body["log_id"] for r in creates) == sorted(
        [shipped["log_id"], shipped["flow_log_id"], shipped["tool_log_id"]]
    )
    assert shipped["update_id"] == shipped["log_id"] and shipped["flow_update_id"] == shipped["flow_log_id"]
    assert creates[0].query == {"version_id": "prv_abc", "environment": "production"}
    for kind, run_key, path in (("prompt", "prompt_id", "demo/calc-prompt"), ("tool", "tool_id", "demo/add")):
        upstream = rig.hl.file_id(kind, path)
        assert shipped[run_key] != upstream  # the SDK was told a placeholder ...
        log = rig.hl.logs[shipped["log_id" if kind == "prompt" else "tool_log_id"]]
        assert log.file_id == upstream and log.updates  # ... and the PATCH still reached the right file
    assert_json_and_key(rig.hl.received, "X-API-KEY", sdk.HL_KEY)
    assert rig.hl.violations == [] and rig.hl.unknown_trace_parents == [] and rig.hl.rejected() == []


@pytest.mark.parametrize("transport", ["unix-socket", "tcp-without-v5"])
async def test_humanloop_sdk_works_over_the_unix_socket_and_without_v5(rig: Rig, transport: str) -> None:
    from humanloop import Humanloop

    def calls() -> dict[str, str]:
        if transport == "unix-socket":
            http = httpx.Client(transport=httpx.HTTPTransport(uds=str(rig.daemon.unix)))
            base = "http://localhost/v5"
        else:
            http, base = httpx.Client(), f"http://{rig.host}"
        with http:
            hl = Humanloop(api_key=sdk.HL_KEY, base_url=base, httpx_client=http)
            try:
                log = hl.prompts.log(path="demo/sock", output="o", log_status="incomplete")
                hl.prompts.update_log(id=log.prompt_id, log_id=log.id, output="p", log_status="complete")
            finally:
                sdk.shutdown_tracing(hl)
        return {"log_id": log.id}

    shipped = await asyncio.to_thread(calls)
    await wait_for(lambda: rig.hl.operations(shipped["log_id"]) == ["prompt.create", "prompt.update"])
    assert [r.path for r in rig.hl.received] == [
        "/v5/prompts/log",
        f"/v5/prompts/{rig.hl.file_id('prompt', 'demo/sock')}/log/{shipped['log_id']}",
    ]
    assert rig.hl.violations == []


def as_model(model: Any, result: Any) -> Any:
    """Validate an SDK method's result as `model`: the SDK builds models unchecked and hands some back as dicts."""
    return model.model_validate(result if isinstance(result, dict) else result.model_dump(exclude_unset=True))


async def test_humanloop_sdk_results_through_shipper_validate_as_the_sdks_own_response_models(rig: Rig) -> None:
    from humanloop.types import (
        CreateFlowLogResponse,
        CreatePromptLogResponse,
        CreateToolLogResponse,
        FlowLogResponse,
        PromptLogResponse,
        ToolLogResponse,
    )

    def calls() -> dict[str, Any]:
        with sdk.humanloop_client(rig.host) as hl:
            kernel = {"model": "gpt-4o-mini", "template": [{"role": "system", "content": "Be terse"}]}
            log = hl.prompts.log(path="demo/models", prompt=kernel, output="4", log_status="incomplete")
            flow = hl.flows.log(path="demo/models-flow", inputs={"q": "2+2"}, log_status="incomplete")
            tool = hl.tools.log(path="demo/models-add", tool={"function": {"name": "add"}}, trace_parent_id=flow.id)
            return {
                "log": log, "flow": flow, "tool": tool,
                "update": hl.prompts.update_log(id=log.prompt_id, log_id=log.id, output="four", log_status="complete"),
                "flow_update": hl.flows.update_log(log_id=flow.id, output="4", log_status="complete"),
                "tool_update": hl.tools.update(id=tool.tool_id, log_id=tool.id, output="5", log_status="complete"),
            }  # fmt: skip

    got = await asyncio.to_thread(calls)
    log, flow, tool = (
        as_model(CreatePromptLogResponse, got["log"]),
        as_model(CreateFlowLogResponse, got["flow"]),
        as_model(CreateToolLogResponse, got["tool"]),
    )
    update = as_model(PromptLogResponse, got["update"])
    flow_update = as_model(FlowLogResponse, got["flow_update"])
    tool_update = as_model(ToolLogResponse, got["tool_update"])

    assert (update.id, update.prompt.id, update.prompt.version_id) == (log.id, log.prompt_id, log.version_id)
    assert (update.prompt.path, update.prompt.model, update.output) == ("demo/models", "gpt-4o-mini", "four")
    flow_file = flow_update.flow
    assert (flow_update.id, flow_file.id, flow_file.version_id) == (flow.id, flow.flow_id, flow.version_id)
    assert (tool_update.id, tool_update.tool.id, tool_update.tool.path) == (tool.id, tool.tool_id, "demo/models-add")
    assert update.evaluator_logs == flow_update.evaluator_logs == tool_update.evaluator_logs == []
    assert all(answer.log_status == "complete" for answer in (update, flow_update, tool_update))
    await wait_for(lambda: len(rig.hl.received) == 6)
    assert rig.hl.violations == [] and rig.hl.rejected() == []


# -- Keywords AI ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/api", "/api/"], ids=["bare", "api", "api-slash"])
async def test_keywords_sdk_through_shipper_reaches_the_documented_path_as_sent(rig: Rig, suffix: str) -> None:
    async with KeywordsAIFake() as reference:
        with pytest.raises(httpx.HTTPStatusError):  # the SDK's own path is not the documented one
            await asyncio.to_thread(sdk.keywords_snippet, host_of(reference), sdk.KW_KEY, suffix)
        # the snippet stops at its first call; replay the second call straight too, to have both as reference
        acreate = {"model": "gpt-4o-mini", "input": "hi", "output": "hello"}
        from keywordsai import LogAPI

        with pytest.raises(httpx.HTTPStatusError):
            await LogAPI(api_key=sdk.KW_KEY, base_url=f"http://{host_of(reference)}").acreate(acreate)
        shipped = await asyncio.to_thread(sdk.keywords_snippet, rig.host, sdk.KW_KEY, suffix)
        await wait_for(lambda: len(rig.kw.received) >= 2)

    logged = {"message": "log successful"}
    assert shipped == {"create": logged, "acreate": logged, "update": "NotImplementedError"}
    assert {r.path for r in reference.attempts} == {"/request-logs/create"}
    assert [(r.method, r.path) for r in rig.kw.received] == [("POST", KW_DOCUMENTED)] * 2
    assert normalized(rig.kw.received, {}) == [
        ("POST", KW_DOCUMENTED, (), body) for _, _, _, body in normalized(reference.attempts, {})
    ]
    assert_json_and_key(rig.kw.received, "Authorization", f"Bearer {sdk.KW_KEY}")
    assert rig.kw.rejected() == []


async def test_keywords_raw_rest_paths_are_forwarded_to_the_documented_path(rig: Rig) -> None:
    paths = ["/api/request-logs/create", "/api/request-logs/create/", "/api/request-logs", "/api/request-logs/"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {sdk.KW_KEY}"}) as session:
        for n, path in enumerate(paths):
            async with session.post(f"http://{rig.host}{path}", json={"model": "m", "custom_identifier": f"r{n}"}) as r:
                assert r.status == 200 and await r.json() == {"message": "log successful"}
    await wait_for(lambda: len(rig.kw.received) == len(paths))
    assert {r.path for r in rig.kw.received} == {KW_DOCUMENTED}
    assert sorted(log["custom_identifier"] for log in rig.kw.logs.values()) == [f"r{n}" for n in range(4)]


# -- keys -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override", [False, True], ids=["apps-key", "override-key"])
async def test_the_apps_key_is_forwarded_unless_the_sink_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: bool
) -> None:
    monkeypatch.setenv("SHIPPER_TEST_SINK_KEY", "shared-sink-key-789")
    async with vendor_rig(tmp_path, override_key=override, key_env="SHIPPER_TEST_SINK_KEY") as rig:
        for fake in rig.fakes:
            fake.api_keys.add("shared-sink-key-789")
        fp = await asyncio.to_thread(sdk.freeplay_entity, rig.host)
        async with sdk.async_humanloop_client(rig.host) as hl:
            log = await sdk.humanloop_entity(hl, 0)
        from keywordsai import LogAPI

        await LogAPI(api_key=sdk.KW_KEY, base_url=f"http://{rig.host}").acreate({"model": "m", "input": "i"})
        await wait_for(lambda: len(rig.fp.received) == 3 and len(rig.hl.received) == 2 and len(rig.kw.received) == 1)

    expected = {"shared-sink-key-789"} if override else None
    assert rig.fp.keys_used() == (expected or {sdk.FP_KEY})
    assert rig.hl.keys_used() == (expected or {sdk.HL_KEY})
    assert rig.kw.keys_used() == (expected or {sdk.KW_KEY})
    assert rig.fp.operations(fp["completion_id"])[0] == "completion.create" and log["log_id"] in rig.hl.logs


async def test_native_records_without_a_key_use_the_sinks_own_key(rig: Rig) -> None:
    items = [
        {"sink": "fp", "path": f"/v2/projects/{sdk.FP_PROJECT}/sessions/{uuid.uuid4()}/completions",
         "body": {"messages": [{"role": "user", "content": "x"}], "completion_id": str(uuid.uuid4())}},
        {"sink": "hl", "path": "/v5/flows/log", "body": {"path": "native/flow", "log_id": "native-1"}},
        {"sink": "kw", "path": "/request-logs/create", "body": {"model": "m", "custom_identifier": "native"}},
    ]  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{rig.host}/v1/records", json=items) as response,
    ):
        assert response.status == 202, await response.text()
    await wait_for(lambda: all(len(fake.received) == 1 for fake in rig.fakes))
    assert rig.fp.keys_used() == {FP_SINK_KEY}
    assert rig.hl.keys_used() == {HL_SINK_KEY} and "native-1" in rig.hl.logs
    assert rig.kw.keys_used() == {KW_SINK_KEY} and rig.kw.received[0].path == KW_DOCUMENTED


async def test_a_native_vendor_record_whose_body_maps_to_no_values_is_400_and_nothing_is_spooled(rig: Rig) -> None:
    good = {"sink": "kw", "path": "/request-logs/create", "body": {"model": "m"}}
    lines = orjson.dumps(good) + b"\n" + b'{"sink": "kw", "path": "/request-logs/create", "body": {"n": 1e400}}\n'
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{rig.host}/v1/records", data=lines, headers={"Content-Type": "application/x-ndjson"}
        ) as response,
    ):
        assert response.status == 400, await response.text()
        answer = await response.json()
    # Refused where the records are decoded (a number no double holds), before any vendor adapter sees it.
    assert (answer["error"], answer["index"], answer["line"]) == ("invalid_json", 1, 2)
    assert "64-bit float" in answer["message"]
    # Committed rows stay in the spool (rows + dead letters) or reach a fake; this request left no trace anywhere.
    assert (
        read(rig.spool, SpoolReader.last_id) is None
        and not rig.dead_letters()
        and all(not fake.received for fake in rig.fakes)
    )


# -- proxied reads --------------------------------------------------------------------------------------------


async def test_reads_are_proxied_straight_through_with_the_remotes_answer(rig: Rig) -> None:
    from freeplay import Freeplay
    from keywordsai import LogAPI

    rig.kw.logs["kw-1"] = {"id": "kw-1", "unique_id": "kw-1", "model": "gpt-4o-mini", "output": "stored"}
    rig.hl.files[("prompt", "dir/listed")] = File("prompt", "pr_listed", "dir/listed")
    fp = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"http://{rig.host}/api")

    template = await asyncio.to_thread(fp.prompts.get, sdk.FP_PROJECT, "calc", "production")
    run = await asyncio.to_thread(fp.test_runs.create, sdk.FP_PROJECT, "golden", name="nightly")

    def hl_list() -> list[str]:
        with sdk.humanloop_client(rig.host) as hl:
            return [prompt.id for prompt in hl.prompts.list(size=5)]

    listed = await asyncio.to_thread(hl_list)
    logs = LogAPI(api_key=sdk.KW_KEY, base_url=f"http://{rig.host}")
    page = await logs.alist(page=1, page_size=10)
    one = await logs.aget("kw-1")

    assert template.prompt_info.prompt_template_version_id == "tplv-calc"
    assert template.prompt_info.environment == "production"
    assert [case.id for case in run.get_test_cases()] == ["tc-1"] and run.test_run_id in rig.fp.test_runs
    assert listed == ["pr_listed"]
    assert page.count == 1 and one.output == "stored"
    assert (rig.fp.attempts[0].path, rig.fp.attempts[0].query) == (
        f"{FP_BASE}/prompt-templates/name/calc", {"environment": "production"}
    )  # fmt: skip
    assert [(r.method, r.path) for r in rig.kw.attempts] == [
        ("GET", "/api/request-logs/list"),
        ("GET", "/api/request-logs/kw-1"),
    ]
    assert rig.kw.attempts[0].query == {"page": "1", "page_size": "10"}
    for fake, header, value in (
        (rig.fp, "Authorization", f"Bearer {sdk.FP_KEY}"),
        (rig.hl, "X-API-KEY", sdk.HL_KEY),
        (rig.kw, "Authorization", f"Bearer {sdk.KW_KEY}"),
    ):
        assert {r.headers.get(header) for r in fake.attempts} == {value}


async def test_a_proxied_error_is_passed_through_with_its_status_and_body(rig: Rig) -> None:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {sdk.FP_KEY}"}) as session,
        session.get(f"http://{rig.host}/api/v2/projects/{sdk.FP_PROJECT}/prompt-templates/name/missing") as response,
    ):
        assert response.status == 404
        assert await response.json() == {"message": "prompt template missing not found"}


PROXIED = {
    "freeplay": (f"/api/v2/projects/{sdk.FP_PROJECT}/prompt-templates/name/calc?environment=latest",
                 {"Authorization": f"Bearer {sdk.FP_KEY}"}),
    "humanloop": ("/v5/prompts?page=1&size=5", {"X-API-KEY": sdk.HL_KEY}),
    "keywordsai": ("/request-logs/list?page=1", {"Authorization": f"Bearer {sdk.KW_KEY}"}),
}  # fmt: skip


@pytest.mark.parametrize("vendor", sorted(PROXIED))
async def test_a_proxied_read_fails_fast_with_502_when_the_remote_is_down(rig: Rig, vendor: str) -> None:
    for fake in rig.fakes:
        await fake.stop()
    path, headers = PROXIED[vendor]
    started = time.monotonic()
    async with aiohttp.ClientSession(headers=headers) as session, session.get(f"http://{rig.host}{path}") as response:
        assert response.status == 502
        assert response.content_type == "application/json" and "error" in await response.json()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("vendor", sorted(PROXIED))
async def test_a_proxied_read_answers_504_when_the_remote_does_not_answer_in_time(tmp_path: Path, vendor: str) -> None:
    async with vendor_rig(tmp_path, timeout=1.0) as rig:
        for fake in rig.fakes:
            fake.fail(Fault(delay=8.0, status=200), match=lambda seen: seen.method == "GET")
        path, headers = PROXIED[vendor]
        started = time.monotonic()
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.get(f"http://{rig.host}{path}") as response,
        ):
            assert response.status == 504
            assert response.content_type == "application/json" and "error" in await response.json()
        assert time.monotonic() - started < 5


async def test_sdk_calls_are_answered_at_once_while_every_remote_is_down(tmp_path: Path) -> None:
    async with vendor_rig(tmp_path, start_fakes=False) as rig:
        started = time.monotonic()
        fp = await asyncio.to_thread(sdk.freeplay_snippet, rig.host)
        hl = await asyncio.to_thread(sdk.humanloop_snippet, rig.host)
        kw = await asyncio.to_thread(sdk.keywords_snippet, rig.host)
        elapsed = time.monotonic() - started
        assert fp["completion_id"] == fp["sent_completion_id"] and hl["log_id"] and kw["create"]
        assert elapsed < 5, f"14 SDK calls took {elapsed:.1f}s with the remotes down"
        for fake in rig.fakes:
            await fake.start()
        await wait_for(lambda: len(rig.fp.received) == 6 and len(rig.hl.received) == 5 and len(rig.kw.received) == 2)
        assert all(fake.violations == [] for fake in rig.fakes)
