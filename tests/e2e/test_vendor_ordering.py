"""Updates after creates, across outages, kill -9, concurrency and random failures; dead-lettered creates; secrets.

The fakes enforce the invariant themselves: an update, feedback or metadata call for an entity whose create they
never received is answered 404 and recorded in `violations`, and a Humanloop PATCH whose path still carries a
placeholder id is too. So every test ends with `violations == []` on top of its own ordering checks.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shipper.spool.reader import DeadRow, read
from tests.fakes import BAD_REQUEST, RATE_LIMITED, RESET, UNAVAILABLE, Fault, Seen
from tests.fakes import snippets as sdk
from tests.fakes.mixed import first_occurrences, interleave, mixed_records
from tests.fakes.rig import APP_KEYS, SINK_KEYS, Rig, vendor_rig
from tests.support import ndjson, run_cli, unix_session, wait_for

FP_OPS = ["completion.create", "completion.update", "completion.feedback"]
HL_OPS = ["prompt.create", "prompt.update"]


def rows_attempted(spool: Path, sink: str) -> int:
    """How many delivery attempts the daemon has made for a sink's queued rows (read-only)."""
    return read(spool, lambda reader: reader.attempts(sink))


async def fp_entity(rig: Rig, project: str = sdk.FP_PROJECT) -> dict[str, Any]:
    return await asyncio.to_thread(sdk.freeplay_entity, rig.host, project=project)


async def hl_entity(rig: Rig, n: int = 0) -> dict[str, Any]:
    async with sdk.async_humanloop_client(rig.host) as hl:
        return await sdk.humanloop_entity(hl, n)


async def make_entity(rig: Rig, vendor: str) -> tuple[str, list[str]]:
    """One create + its dependants through the SDK; returns the entity id and the operations expected."""
    if vendor == "freeplay":
        return (await fp_entity(rig))["completion_id"], FP_OPS
    return (await hl_entity(rig))["log_id"], HL_OPS


def fake_of(rig: Rig, vendor: str) -> Any:
    return rig.fp if vendor == "freeplay" else rig.hl


def is_create(vendor: str) -> Callable[[Seen], bool]:
    if vendor == "freeplay":
        return lambda seen: seen.method == "POST" and seen.path.endswith("/completions")
    return lambda seen: seen.method == "POST" and seen.path == "/v5/prompts/log"


def is_update(vendor: str) -> Callable[[Seen], bool]:
    if vendor == "freeplay":
        return lambda seen: seen.method == "POST" and "/completions/" in seen.path
    return lambda seen: seen.method == "PATCH"


VENDORS = ["freeplay", "humanloop"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with vendor_rig(tmp_path) as running:
        yield running


# -- (a) the remote down during the create --------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["stopped", "503"])
@pytest.mark.parametrize("vendor", VENDORS)
async def test_updates_wait_for_their_create_while_the_remote_is_down(tmp_path: Path, vendor: str, outage: str) -> None:
    async with vendor_rig(tmp_path, start_fakes=outage != "stopped") as rig:
        fake = fake_of(rig, vendor)
        if outage == "503":
            fake.fail(UNAVAILABLE)
        entity, expected = await make_entity(rig, vendor)
        sink = "fp" if vendor == "freeplay" else "hl"
        if outage == "stopped":
            await wait_for(lambda: rows_attempted(rig.spool, sink) >= 3)
        else:
            await wait_for(lambda: len(fake.attempts) >= 3)
            assert all(seen.status == 503 and is_create(vendor)(seen) for seen in fake.attempts)
        fake.clear_faults()
        await fake.start()
        await wait_for(lambda: fake.operations(entity) == expected)

    assert fake.violations == [] and fake.rejected() == []


# -- (b) kill -9 between the create and the update ------------------------------------------------------------


@pytest.mark.parametrize("stage", ["nothing-delivered", "create-in-flight", "update-pending"])
@pytest.mark.parametrize("vendor", VENDORS)
async def test_kill_9_between_create_and_update_loses_nothing_and_keeps_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor: str, stage: str
) -> None:
    # Whether a restart reclaims a dead process's leases at once or when they expire is shipper's choice; keep
    # the expiry short so this test is about loss and order, not about that latency.
    monkeypatch.setenv("SHIPPER__SPOOL__LEASE_TIMEOUT", "6")
    async with vendor_rig(tmp_path, start_fakes=stage != "nothing-delivered") as rig:
        fake = fake_of(rig, vendor)
        if stage == "create-in-flight":
            fake.fail(Fault(delay=1.5), match=is_create(vendor), times=1)
        elif stage == "update-pending":
            fake.fail(UNAVAILABLE, match=is_update(vendor))
        entity, expected = await make_entity(rig, vendor)  # every call acknowledged
        if stage == "create-in-flight":
            await wait_for(lambda: fake.in_flight >= 1)
        elif stage == "update-pending":
            await wait_for(lambda: fake.operations(entity) == expected[:1] and len(fake.faulted) >= 2)
        await rig.daemon.kill9()

        fake.clear_faults()
        await fake.start()
        await rig.restart()
        await wait_for(lambda: first_occurrences(fake.operations(entity)) == expected)
        await wait_for(lambda: fake.in_flight == 0)  # the create the dead process left in flight has finished

    assert fake.violations == [] and fake.rejected() == []
    if stage == "create-in-flight":
        # the remote finished the create after shipper died, and shipper sent it again with the same id
        assert fake.operations(entity).count(expected[0]) == 2 and fake.duplicates == 1


# -- (c) 32 concurrent entities, 30 % random failures ---------------------------------------------------------


@pytest.mark.timeout(90)
async def test_32_concurrent_entities_under_30_percent_failures_all_arrive_in_order(tmp_path: Path) -> None:
    async with vendor_rig(tmp_path, concurrency=16) as rig:
        for seed, fake in enumerate((rig.fp, rig.hl)):
            fake.chaos(0.3, [UNAVAILABLE, RATE_LIMITED, RESET], seed=seed)
            fake.latency = 0.02
        fps = asyncio.gather(*(fp_entity(rig) for _ in range(32)))
        async with sdk.async_humanloop_client(rig.host) as hl:
            hls = await asyncio.gather(*(sdk.humanloop_entity(hl, n) for n in range(32)))
        fp_ids = [e["completion_id"] for e in await fps]

        await wait_for(lambda: all(first_occurrences(rig.fp.operations(c)) == FP_OPS for c in fp_ids), timeout=60)
        await wait_for(
            lambda: all(first_occurrences(rig.hl.operations(e["log_id"])) == HL_OPS for e in hls), timeout=60
        )

    assert len(set(fp_ids)) == 32 and len({e["log_id"] for e in hls}) == 32
    for fake in (rig.fp, rig.hl):
        assert fake.chaos_plan is not None and fake.chaos_plan.hits >= 10  # the failures really happened
        assert fake.violations == [] and fake.rejected() == []
        assert fake.max_in_flight >= 2, "independent entities should be delivered in parallel"
    for entity in hls:  # each update went to the prompt id the remote assigned, not the SDK's placeholder
        assert rig.hl.logs[entity["log_id"]].file_id == rig.hl.file_id("prompt", entity["path"]) != entity["prompt_id"]


# -- dead-lettered creates ------------------------------------------------------------------------------------

BAD_PROJECT = "99999999-8888-7777-6666-555555555555"
BAD_PROMPT = "dead/prompt"


def fp_create(host: str, project: str) -> str:
    from freeplay import Freeplay, RecordPayload, SessionInfo

    fp = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"http://{host}/api")
    payload = RecordPayload(
        project_id=project,
        all_messages=[{"role": "user", "content": "hi"}],
        session_info=SessionInfo(str(uuid.uuid4()), None),
        completion_id=uuid.uuid4(),
    )
    return str(fp.recordings.create(payload).completion_id)


def fp_dependants(host: str, project: str, cid: str) -> None:
    from freeplay import Freeplay
    from freeplay.resources.recordings import RecordUpdatePayload

    fp = Freeplay(freeplay_api_key=sdk.FP_KEY, api_base=f"http://{host}/api")
    fp.recordings.update(RecordUpdatePayload(project_id=project, completion_id=cid, new_messages=[], eval_results={}))
    fp.customer_feedback.update(project, cid, {"thumbs_up": False})


class DeadScenario:
    """One vendor's create (that the remote will refuse with 400) and its dependants, as separate SDK steps."""

    def __init__(self, rig: Rig, vendor: str) -> None:
        self.rig, self.vendor = rig, vendor
        self.sink = "fp" if vendor == "freeplay" else "hl"
        self.expected = FP_OPS if vendor == "freeplay" else HL_OPS
        self.told: Any = None

    def refuse_bad_creates(self) -> None:
        if self.vendor == "freeplay":
            self.rig.fp.fail(BAD_REQUEST, match=lambda seen: BAD_PROJECT in seen.path and is_create("freeplay")(seen))
        else:
            self.rig.hl.fail(BAD_REQUEST, match=lambda seen: (seen.body or {}).get("path") == BAD_PROMPT)

    async def create(self) -> str:
        if self.vendor == "freeplay":
            self.told = await asyncio.to_thread(fp_create, self.rig.host, BAD_PROJECT)
            return str(self.told)
        async with sdk.async_humanloop_client(self.rig.host) as hl:
            self.told = await hl.prompts.log(path=BAD_PROMPT, output="o", log_status="incomplete")
        return str(self.told.id)

    async def dependants(self) -> None:
        if self.vendor == "freeplay":
            await asyncio.to_thread(fp_dependants, self.rig.host, BAD_PROJECT, self.told)
            return
        async with sdk.async_humanloop_client(self.rig.host) as hl:
            await hl.prompts.update_log(id=self.told.prompt_id, log_id=self.told.id, output="x", log_status="complete")

    def dead(self) -> list[DeadRow]:
        return [row for row in self.rig.dead_letters() if row.sink == self.sink]


@pytest.mark.parametrize("timing", ["queued-behind-the-create", "sent-after-the-create-died"])
@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_dead_lettered_create_takes_its_dependants_with_it(tmp_path: Path, vendor: str, timing: str) -> None:
    queued = timing == "queued-behind-the-create"
    async with vendor_rig(tmp_path, start_fakes=not queued) as rig:
        scenario = DeadScenario(rig, vendor)
        fake = fake_of(rig, vendor)
        scenario.refuse_bad_creates()
        bad = await scenario.create()
        if queued:  # every row is spooled before the remote is reachable
            await scenario.dependants()
            await fake.start()
        else:  # the app updates an entity whose create the remote already refused
            await wait_for(lambda: len(scenario.dead()) == 1)
            await scenario.dependants()
        good, _ = await make_entity(rig, vendor)

        await wait_for(lambda: len(scenario.dead()) == len(scenario.expected))
        await wait_for(lambda: fake.operations(good) == scenario.expected)
        dead = scenario.dead()

    create, *dependants = dead
    assert create.status == 400 and "bad request (fake)" in (create.response or "")
    assert create.method == "POST" and (bad in create.path or bad in (create.key or ""))
    for row in dependants:
        assert row.status is None, f"a dependant of a dead create was sent: {row}"
        assert re.search(rf"\b{create.id}\b", row.reason) or bad in row.reason, row.reason
    assert not [seen for seen in fake.attempts if bad in seen.path and not is_create(vendor)(seen)]
    assert fake.violations == [] and fake.operations(bad) == []


async def test_a_child_whose_parent_trace_is_never_recorded_is_still_delivered(rig: Rig) -> None:
    # vendors.md: Freeplay takes a completion or child trace before its parent (the SDK posts the parent last), so
    # a parent that never comes (an agent that crashed before record_output) must not hold its children back.
    sid, cid, parent = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    create = {"messages": [{"role": "user", "content": "x"}], "completion_id": cid, "parent_id": parent}
    items = [
        {"sink": "fp", "path": f"/v2/projects/{sdk.FP_PROJECT}/sessions/{sid}/completions", "body": create},
        {"sink": "fp", "path": f"/v2/projects/{sdk.FP_PROJECT}/completion-feedback/id/{cid}", "body": {"ok": True}},
    ]
    async with aiohttp.ClientSession() as session, session.post(f"http://{rig.host}/v1/records", json=items) as r:
        assert r.status == 202, await r.text()
    await wait_for(lambda: rig.fp.operations(cid) == ["completion.create", "completion.feedback"])
    assert rig.fp.violations == [] and parent not in rig.fp.traces


# -- Humanloop ids ------------------------------------------------------------------------------------------------


async def test_humanloop_update_paths_are_rewritten_with_the_ids_the_remote_assigned(rig: Rig) -> None:
    paths = ["rewrite/a", "rewrite/b", "rewrite/a", "rewrite/c"]

    async def one(hl: Any, path: str, n: int) -> dict[str, Any]:
        prompt = await hl.prompts.log(path=path, output=f"o{n}", log_status="incomplete")
        tool = await hl.tools.log(path=f"{path}-tool", tool={"function": {"name": "f", "parameters": {}}}, output="t")
        await hl.prompts.update_log(id=prompt.prompt_id, log_id=prompt.id, output=f"f{n}", log_status="complete")
        await hl.tools.update(id=tool.tool_id, log_id=tool.id, output="t2")
        return {"path": path, "prompt": prompt, "tool": tool}

    async with sdk.async_humanloop_client(rig.host) as hl:
        told = await asyncio.gather(*(one(hl, path, n) for n, path in enumerate(paths)))
    await wait_for(lambda: len(rig.hl.accepted("PATCH")) == 2 * len(paths))

    assert told[0]["prompt"].prompt_id == told[2]["prompt"].prompt_id  # one placeholder per path
    for entry in told:
        upstream_prompt = rig.hl.file_id("prompt", entry["path"])
        upstream_tool = rig.hl.file_id("tool", entry["path"] + "-tool")
        assert upstream_prompt not in (None, entry["prompt"].prompt_id)
        assert upstream_tool not in (None, entry["tool"].tool_id)
        assert rig.hl.accepted("PATCH", f"/v5/prompts/{upstream_prompt}/log/{entry['prompt'].id}")
        assert rig.hl.accepted("PATCH", f"/v5/tools/{upstream_tool}/log/{entry['tool'].id}")
    assert rig.hl.violations == [] and rig.hl.rejected() == []


# -- mixed load -----------------------------------------------------------------------------------------------

N_FP, N_TRACES, N_HL, N_KW = 1000, 500, 1500, 3000  # 3 + 2 + 2 + 1 records each: 10 000 records


@pytest.mark.timeout(120)
async def test_ten_thousand_mixed_vendor_records_under_20_percent_failures_all_arrive_in_order(tmp_path: Path) -> None:
    seqs, ids = mixed_records(N_FP, N_TRACES, N_HL, N_KW)
    items = interleave(seqs)
    assert len(items) == 10_000
    async with vendor_rig(tmp_path, concurrency=32) as rig:
        for seed, fake in enumerate(rig.fakes):
            fake.chaos(0.2, [UNAVAILABLE, RATE_LIMITED, RESET], seed=seed)
        sdk_calls = asyncio.gather(
            *(fp_entity(rig) for _ in range(8)),
            *(hl_entity(rig, n) for n in range(8)),
            asyncio.to_thread(sdk.keywords_snippet, rig.host),
        )
        async with unix_session(rig.daemon.unix) as unix, aiohttp.ClientSession() as tcp:
            for number, start in enumerate(range(0, len(items), 500)):
                session, url = (
                    (unix, "http://localhost/v1/records") if number % 2 else (tcp, f"http://{rig.host}/v1/records")
                )
                batch = ndjson(items[start : start + 500])
                async with session.post(url, data=batch, headers={"Content-Type": "application/x-ndjson"}) as r:
                    assert r.status == 202, await r.text()
        extra = await sdk_calls
        fp_sdk = [e["completion_id"] for e in extra[:8]]
        hl_sdk = [e["log_id"] for e in extra[8:16]]

        def delivered() -> bool:
            completions, traces, logs = rig.fp.completions, rig.fp.traces, rig.hl.logs
            return (
                all(c in completions and completions[c].feedback for c in ids["fp"] + fp_sdk)
                and all(t in traces and traces[t].updates for t in ids["trace"])
                and all(lid in logs and logs[lid].updates for lid in ids["hl"] + hl_sdk)
                and len(rig.kw.logs) >= N_KW + 2
            )

        await wait_for(delivered, timeout=60, interval=0.2)

    for cid in ids["fp"] + fp_sdk:
        assert first_occurrences(rig.fp.operations(cid)) == FP_OPS
    for tid in ids["trace"]:
        assert first_occurrences(rig.fp.operations(tid)) == ["trace.record", "trace.update"]
    for lid in ids["hl"]:
        assert first_occurrences(rig.hl.operations(lid)) == ["flow.create", "flow.update"]
    for lid in hl_sdk:
        assert first_occurrences(rig.hl.operations(lid)) == HL_OPS
    stored = {log.get("custom_identifier") for log in rig.kw.logs.values()}
    assert {f"mix-{n}" for n in range(N_KW)} | {"calc-001"} <= stored
    for fake in rig.fakes:
        assert fake.chaos_plan is not None and fake.chaos_plan.hits > 100
        assert fake.violations == [] and fake.rejected() == []


# -- secrets --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_level", ["info", "debug"])
async def test_keys_never_appear_in_logs_status_or_dead_letters_and_the_spool_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_level: str
) -> None:
    monkeypatch.setenv("SHIPPER__DAEMON__LOG_LEVEL", log_level)
    rejected_key = "fp-rejected-key-789"
    async with vendor_rig(tmp_path) as rig:
        await asyncio.to_thread(sdk.freeplay_snippet, rig.host)
        await asyncio.to_thread(sdk.humanloop_snippet, rig.host)
        await asyncio.to_thread(sdk.keywords_snippet, rig.host)
        await asyncio.to_thread(sdk.freeplay_entity, rig.host, rejected_key)  # the remote answers 401: dead letters
        rig.hl.fail(BAD_REQUEST, match=lambda seen: (seen.body or {}).get("path") == "load/prompt-3")
        await hl_entity(rig, 3)
        async with aiohttp.ClientSession(headers={"X-API-KEY": sdk.HL_KEY}) as session:
            async with session.get(f"http://{rig.host}/v5/prompts") as response:
                assert response.status == 200
            await rig.hl.stop()
            async with session.get(f"http://{rig.host}/v5/prompts") as response:
                assert response.status == 502
        await wait_for(lambda: len(rig.dead_letters()) >= 5)
        code, status_json, _ = run_cli("status", "--json", "--config", str(rig.daemon.config))
        code_table, status_table, _ = run_cli("status", "--config", str(rig.daemon.config))
        assert code == 0 and code_table == 0
        spool_files = [p for p in tmp_path.iterdir() if p.name.startswith("spool.db")]
        modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in spool_files}
        dead = rig.dead_letters()
        assert await rig.daemon.terminate() == 0
    logs = rig.daemon.logs()

    assert any(row.status == 401 for row in dead)
    secrets = (*APP_KEYS, *SINK_KEYS, rejected_key)
    for secret in secrets:
        assert secret not in logs, f"{secret} leaked into shipper's log"
        assert secret not in status_json and secret not in status_table
        assert not [row for row in dead if secret in repr(row)], f"{secret} leaked into dead_letters"
    # Files owner-only; the directory of presence locks (one per process of the shipper) owner-only too.
    assert modes["spool.db"] == 0o600 and modes.pop("spool.db-owners", 0o700) == 0o700, modes
    assert set(modes.values()) == {0o600}, modes
