"""The soak's clients, and the ledger of what shipper acknowledged.

Steady load: NDJSON requests of 1 to 32 records over the Unix socket and over TCP, a few hundred records a second.
Freeplay: drop-in completion creates, each maybe followed by its feedback (which shipper must deliver after the
create). Bursts: thousands of records in about a second, over four connections at once.

Every record carries a unique `soak_uid` in its body; the remote refuses for good every record marked
`"reject": true`, and which ones are marked is decided by the uid. A record counts as acknowledged only when its
request was answered 202 (a drop-in call: its vendor's 200/201); a request that failed (the daemon restarting, a
connection lost) leaves its records *unacknowledged*: they may or may not be in the spool, and are never counted as
lost. Records sharing a key are sent by one client, one request at a time, so the order of their acknowledgements is
their order in the spool. Not responsible for faults, restarts or the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.soak_daemon import FP_KEY, FP_PROJECT

# 1 record in 40 is refused by the remote on purpose (400): shipper must dead-letter exactly those.
REJECT_EVERY = 40
NDJSON = {"Content-Type": "application/x-ndjson"}
TEXT = "The quick brown fox jumps over the lazy dog. " * 12
BATCH_SIZES = (1, 1, 1, 2, 4, 8, 16, 32)


def is_reject(uid: int) -> bool:
    return uid % REJECT_EVERY == 13


@dataclass
class Ledger:
    next_uid: int = 1
    # uid → (key or None, rank): for native records the spool id, for drop-in calls the order of their answers.
    acked: dict[int, tuple[str | None, int]] = field(default_factory=dict)
    unacked: set[int] = field(default_factory=set)
    marked_reject: set[int] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    vendor_rank: int = 0

    def take(self, n: int) -> range:
        uids = range(self.next_uid, self.next_uid + n)
        self.next_uid += n
        return uids

    @property
    def sent(self) -> int:
        return self.next_uid - 1

    def fail(self, uids: list[int], why: str) -> None:
        self.unacked.update(uids)
        self.failures[why] += 1


def native_line(uid: int, key: str | None) -> bytes:
    body: dict[str, object] = {"soak_uid": uid, "model": "gpt-4o-mini", "output": TEXT[: 40 + uid % 400]}
    if is_reject(uid):
        body["reject"] = True
    item: dict[str, object] = {"sink": "remote", "body": body}
    if key is not None:
        item["key"] = body["key"] = key
    return orjson.dumps(item) + b"\n"


def error_code(answer: bytes) -> str:
    """The `error` of shipper's JSON error body, for the tally of failed requests."""
    try:
        return str(orjson.loads(answer)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "(no JSON error)"


async def send_native(
    session: aiohttp.ClientSession, url: str, batch: list[tuple[int, str | None]], ledger: Ledger
) -> bool:
    uids = [uid for uid, _ in batch]
    ledger.marked_reject.update(uid for uid in uids if is_reject(uid))
    data = b"".join(native_line(uid, key) for uid, key in batch)
    try:
        async with session.post(url, data=data, headers=NDJSON) as response:
            status, answer = response.status, await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        ledger.fail(uids, type(exc).__name__)
        return False
    if status != 202:
        ledger.fail(uids, f"HTTP {status} {error_code(answer)}")
        return False
    ids = orjson.loads(answer)["ids"]
    for (uid, key), row_id in zip(batch, ids, strict=True):
        ledger.acked[uid] = (key, row_id)
    return True


async def pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def steady(
    session: aiohttp.ClientSession, url: str, ledger: Ledger, rate: float, owner: str, stop: asyncio.Event
) -> None:
    """About `rate` records a second until `stop`; 30 % keyed, on keys this client alone uses."""
    rng = random.Random(owner)
    keys = [f"{owner}-{j}" for j in range(20)]
    while not stop.is_set():
        n = rng.choice(BATCH_SIZES)
        batch = [(uid, rng.choice(keys) if rng.random() < 0.3 else None) for uid in ledger.take(n)]
        ok = await send_native(session, url, batch, ledger)
        await pause(stop, n / rate if ok else 0.1)


async def send_vendor(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], expect: int, key: str, ledger: Ledger
) -> bool:
    uid = int(body["soak_uid"])  # type: ignore[call-overload]
    headers = {"Authorization": f"Bearer {FP_KEY}", "Content-Type": "application/json"}
    try:
        async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
            status, answer = response.status, await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        ledger.fail([uid], type(exc).__name__)
        return False
    if status != expect:
        ledger.fail([uid], f"HTTP {status} {error_code(answer)}")
        return False
    ledger.vendor_rank += 1
    ledger.acked[uid] = (key, ledger.vendor_rank)
    return True


async def freeplay(session: aiohttp.ClientSession, base: str, ledger: Ledger, rate: float, stop: asyncio.Event) -> None:
    """Freeplay completions through the drop-in path, half of them followed by feedback on the same completion."""
    rng = random.Random("freeplay")
    sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(8)]
    project = f"{base}/api/v2/projects/{FP_PROJECT}"
    while not stop.is_set():
        cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        (uid,) = ledger.take(1)
        create = {
            "messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
            "inputs": {"question": "2 + 2"},
            "completion_id": cid,
            "soak_uid": uid,
        }
        url = f"{project}/sessions/{rng.choice(sessions)}/completions"
        if await send_vendor(session, url, create, 200, f"fp:{cid}", ledger) and rng.random() < 0.5:
            (uid,) = ledger.take(1)
            feedback = {"freeplay_feedback": "positive", "soak_uid": uid}
            await send_vendor(session, f"{project}/completion-feedback/id/{cid}", feedback, 201, f"fp:{cid}", ledger)
        await pause(stop, 1 / rate)


async def burst(targets: list[tuple[aiohttp.ClientSession, str]], ledger: Ledger, total: int, number: int) -> None:
    """`total` records as fast as shipper takes them: requests of 100 over every target at once."""
    share = total // len(targets)

    async def worker(index: int, session: aiohttp.ClientSession, url: str) -> None:
        keys = [f"burst{number}-{index}-{j}" for j in range(8)]
        sent = 0
        while sent < share:
            n = min(100, share - sent)
            batch = [(uid, keys[uid % 8] if uid % 5 == 0 else None) for uid in ledger.take(n)]
            await send_native(session, url, batch, ledger)
            sent += n

    await asyncio.gather(*(worker(i, session, url) for i, (session, url) in enumerate(targets)))
