"""The vendors' own SDKs at two sidecars, through a real 3-node JetStream cluster, delivered by two relays to the
strict fake vendors: each vendor sink at a sidecar goes `via` a `jetstream` sink, so its drop-in calls are
answered from the sidecar's spool as always and then travel the stream; the relays deliver them with their own
keys. The fakes must receive what the SDK sends straight to a reference fake (twice: one run per sidecar), every
update after its create (the fakes refuse anything else), no app key anywhere in the stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.fakes import RATE_LIMITED, UNAVAILABLE, FreeplayFake, HumanloopFake, KeywordsAIFake
from tests.fakes import snippets as sdk
from tests.fakes.compare import assert_json_and_key, fp_ids, hl_ids, host_of, normalized
from tests.fakes.mixed import first_occurrences, interleave, mixed_records
from tests.fakes.rig import FP_SINK_KEY, HL_SINK_KEY, KW_SINK_KEY, PASS_THROUGH, sink_toml
from tests.jetstream import NatsCluster, jetstream_sink, relay_daemon
from tests.support import Daemon, metric, post_items, running, scrape, wait_for, write_config

STREAM = "ROWS"
PARTITIONS = 4
FP_OPS = ["completion.create", "completion.update", "completion.feedback"]
VENDORS = (("fp", "freeplay"), ("hl", "humanloop"), ("kw", "keywordsai"))


def sidecar(home: Path, cluster: NatsCluster, fakes: dict[str, str], extra: str = "") -> Daemon:
    """Vendor sinks fp, hl, kw, each via a jetstream sink of its own (fleet-fp, ...) whose target is the relay's."""
    home.mkdir()
    parts = []
    for name, vendor in VENDORS:
        parts.append(sink_toml(name, vendor, fakes[name], None) + f'via = "fleet-{name}"\n')
        parts.append(jetstream_sink(f"fleet-{name}", cluster, STREAM, name, PARTITIONS))
    return Daemon.from_config(write_config(home, "\n".join(parts), extra=PASS_THROUGH + extra))


def relay(home: Path, cluster: NatsCluster, fakes: dict[str, str]) -> Daemon:
    """The relay's sinks fp, hl, kw deliver to the fakes with the relay's own keys."""
    home.mkdir()
    sinks = []
    for (name, vendor), key in zip(VENDORS, (FP_SINK_KEY, HL_SINK_KEY, KW_SINK_KEY), strict=True):
        key_file = home / f"{name}.key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        sinks.append(sink_toml(name, vendor, fakes[name], key_file))
    return relay_daemon(home, cluster, STREAM, PARTITIONS, "\n".join(sinks), PASS_THROUGH)


def run_snippets(host: str) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    """Each vendor's contract snippet, as an app would run them, against `host`."""
    fp = sdk.freeplay_snippet(host)
    hl = sdk.humanloop_snippet(host)
    sdk.humanloop_extras(host, hl)
    kw = sdk.keywords_snippet(host, sdk.KW_KEY)
    return fp, hl, kw


async def test_the_vendors_sdks_at_two_sidecars_reach_the_vendors_through_the_stream_and_two_relays(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    fp, hl, kw = (
        FreeplayFake(api_keys=(FP_SINK_KEY, sdk.FP_KEY)),
        HumanloopFake(api_keys=(HL_SINK_KEY, sdk.HL_KEY)),
        KeywordsAIFake(api_keys=(KW_SINK_KEY,)),
    )
    async with fp, hl, kw, FreeplayFake() as fp_ref, HumanloopFake() as hl_ref:
        fakes = {"fp": fp.url, "hl": hl.url, "kw": kw.url}
        sidecars = [sidecar(tmp_path / f"sidecar-{n}", nats_cluster, fakes) for n in (1, 2)]
        relays = [relay(tmp_path / f"relay-{n}", nats_cluster, fakes) for n in (1, 2)]
        direct_fp = await asyncio.to_thread(sdk.freeplay_snippet, host_of(fp_ref))
        direct_hl = await asyncio.to_thread(sdk.humanloop_snippet, host_of(hl_ref))
        await asyncio.to_thread(sdk.humanloop_extras, host_of(hl_ref), direct_hl)
        async with running(*sidecars, *relays):
            runs = await asyncio.gather(*(asyncio.to_thread(run_snippets, s.http) for s in sidecars))
            await wait_for(
                lambda: (
                    len(fp.received) >= 2 * len(fp_ref.received)
                    and len(hl.received) >= 2 * len(hl_ref.received)
                    and len(kw.received) >= 4
                ),
                timeout=60,
            )
        messages = await nats_cluster.messages(STREAM)
    fp_ids_both = {k: v for run in runs for k, v in fp_ids(run[0]).items()}
    hl_ids_both = {k: v for run in runs for k, v in hl_ids(hl, run[1]).items()}  # the files exist by now

    # what each SDK sent, twice over, as if straight to the vendor; log_id is what shipper adds (the id it told the SDK)
    assert normalized(fp.received, fp_ids_both) == sorted(2 * normalized(fp_ref.received, fp_ids(direct_fp)))
    log_ids = frozenset({"log_id"})
    assert normalized(hl.received, hl_ids_both, log_ids) == sorted(
        2 * normalized(hl_ref.received, hl_ids(hl_ref, direct_hl), log_ids)
    )
    assert [run[2] for run in runs] == [
        {
            "create": {"message": "log successful"},
            "acreate": {"message": "log successful"},
            "update": "NotImplementedError",
        }
    ] * 2
    assert len(kw.received) == 4
    for run in runs:  # the Humanloop update reached the file its create made, though the SDK was told a placeholder
        log = hl.logs[str(run[1]["log_id"])]
        assert log.file_id == hl.file_id("prompt", "demo/calc-prompt") and log.updates
    # delivered with the relays' keys; the apps' keys stayed at the sidecars (a stream dump shows none)
    assert_json_and_key(fp.received, "Authorization", f"Bearer {FP_SINK_KEY}")
    assert_json_and_key(hl.received, "X-API-KEY", HL_SINK_KEY)
    assert_json_and_key(kw.received, "Authorization", f"Bearer {KW_SINK_KEY}")
    assert len(messages) == len(fp.received) + len(hl.received) + len(kw.received)  # each call one message
    dump = b"".join(repr(message).encode() for message in messages)
    assert all(key.encode() not in dump for key in (sdk.FP_KEY, sdk.HL_KEY, sdk.KW_KEY))
    # every update after its create, per entity, at each vendor
    assert fp.violations == [] and fp.rejected() == [] and fp.duplicates == 0
    assert hl.violations == [] and hl.unknown_trace_parents == [] and hl.rejected() == []
    assert kw.rejected() == []


@pytest.mark.timeout(150)
async def test_a_mixed_vendor_load_survives_a_relays_kill9_in_order_with_its_repeats_counted(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    """2,000 native records for the three vendors (Freeplay completions and traces, Humanloop flow logs with their
    updates, Keywords AI logs), each entity at one of two sidecars, through the stream to two relays, the fakes
    refusing 10% with 503 or 429; one relay killed with -9 mid-stream. Every entity arrives whole and in order; a
    repeat at a vendor is a message the stream handed the surviving relay again (the killed one had sent it and not
    had it acknowledged)."""
    seqs, ids = mixed_records(200, 100, 300, 600)
    fp, hl, kw = (
        FreeplayFake(api_keys=(FP_SINK_KEY,)),
        HumanloopFake(api_keys=(HL_SINK_KEY,)),
        KeywordsAIFake(api_keys=(KW_SINK_KEY,)),
    )
    async with fp, hl, kw:
        for seed, fake in enumerate((fp, hl, kw)):
            fake.chaos(0.1, [UNAVAILABLE, RATE_LIMITED], seed=seed)
        fakes = {"fp": fp.url, "hl": hl.url, "kw": kw.url}
        redact = '[redact]\nbuiltin = ["emails"]\n'  # at the sidecar, before the spool: by the vendor's rules
        sidecars = [sidecar(tmp_path / f"sidecar-{n}", nats_cluster, fakes, redact) for n in (1, 2)]
        killed, survivor = (relay(tmp_path / f"relay-{n}", nats_cluster, fakes) for n in (1, 2))

        def delivered() -> bool:
            return (
                all(c in fp.completions and fp.completions[c].feedback for c in ids["fp"])
                and all(t in fp.traces and fp.traces[t].updates for t in ids["trace"])
                and all(lid in hl.logs and hl.logs[lid].updates for lid in ids["hl"])
                and len(kw.logs) >= len(ids["kw"]) + 1
            )

        async with running(*sidecars, killed, survivor), aiohttp.ClientSession() as session:
            secret = {"model": "gpt-4o-mini", "input": "mail a@b.example", "output": "o", "custom_identifier": "mailed"}
            await post_items(session, f"http://{sidecars[0].http}/v1/records", [{"sink": "kw", "body": secret,
                             "path": "/request-logs/create"}])  # fmt: skip
            for n, side in enumerate(sidecars):  # an entity's records all at one sidecar, in order
                items = interleave(seqs[n::2])
                for start in range(0, len(items), 250):
                    await post_items(session, f"http://{side.http}/v1/records", items[start : start + 250])
            await wait_for(lambda: len(hl.logs) >= 100, timeout=60)
            await killed.kill9()
            await wait_for(delivered, timeout=90, interval=0.2)
            _, samples = await scrape(session, f"http://{survivor.http}")

    for cid in ids["fp"]:
        assert first_occurrences(fp.operations(cid)) == [
            "completion.create",
            "completion.update",
            "completion.feedback",
        ]
    for tid in ids["trace"]:
        assert first_occurrences(fp.operations(tid)) == ["trace.record", "trace.update"]
    for lid in ids["hl"]:
        assert first_occurrences(hl.operations(lid)) == ["flow.create", "flow.update"]
    assert {log.get("custom_identifier") for log in kw.logs.values()} == {*ids["kw"], "mailed"}
    (mailed,) = [log for log in kw.logs.values() if log.get("custom_identifier") == "mailed"]
    assert "a@b.example" not in str(mailed) and mailed["metadata"]["shipper_redacted"] == "emails"  # a kw record
    for fake in (fp, hl, kw):
        assert fake.chaos_plan is not None and fake.chaos_plan.hits > 10
        assert fake.violations == [] and fake.rejected() == []
    redelivered = metric(samples, "shipper_relay_redeliveries_total")
    assert redelivered is not None and redelivered > 0  # the killed relay's unacknowledged messages
    assert fp.duplicates + hl.duplicates + kw.duplicates <= redelivered
