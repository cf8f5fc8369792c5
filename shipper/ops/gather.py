"""One daemon to the outside: the process that answers `/metrics`, `/v1/status` or `/readyz` asks its delivering
peers too, and answers for all of them.

Each delivering process serves the operations routes on a private Unix socket named after its presence (Linux's
abstract namespace: nothing to clean up after a `kill -9`), and the appending process that serves the public
listeners finds its peers in the spool's owners directory. Metrics add up sample by sample: counters, histograms and
most gauges are sums (rows in flight, memory); gauges that describe the one shared spool, a state, or a build are
the same seen from any process, so they take the largest; a start time takes the earliest. A peer that does not
answer in time is left out, never waited for. Not responsible for what each process counts (metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from shipper.spool.owners import owners_dir
from shipper.spool.wakes import DELIVERING

# A peer's answer is awaited this long at most: a scrape must not hang on a stopped (SIGSTOP) process.
PEER_TIMEOUT = 2.0
MAX_ANSWER = 16 << 20
LARGEST = ("shipper_spool_", "shipper_sink_state", "shipper_build", "python_info", "process_max_fds")
EARLIEST = ("process_start_time_seconds",)


def control_address(owner: str) -> str:
    return f"\0shipper-control-{owner}"


def delivering_peers(spool: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(owners_dir(spool)) if e.name.startswith(DELIVERING))
    except FileNotFoundError:
        return []


async def ask(owner: str, path: str) -> tuple[int, bytes] | None:
    """GET `path` from a peer's control socket: its status and body, or None if it did not answer in time.
    HTTP/1.0 by hand on a socket connected here: uvloop cannot connect to an abstract address by name."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        async with asyncio.timeout(PEER_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, control_address(owner))
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            try:
                writer.write(f"GET {path} HTTP/1.0\r\nHost: peer\r\n\r\n".encode())
                answer = await reader.read(MAX_ANSWER)
            finally:
                writer.close()
    except (TimeoutError, OSError):
        sock.close()
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    return (int(status[0]), body) if status and status[0].isdigit() else None


async def ask_all(spool: Path, path: str) -> dict[str, tuple[int, bytes] | None]:
    peers = delivering_peers(spool)
    answers = await asyncio.gather(*(ask(peer, path) for peer in peers))
    return dict(zip(peers, answers, strict=True))


def merge_metrics(texts: Iterable[str]) -> bytes:
    """Prometheus text from several processes as one exposition."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                values[key] = _combine(family, sample.name, values.get(key), sample.value)
    for (name, sample_name, labels), value in values.items():
        families[name].add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


def _combine(family: Metric, sample: str, before: float | None, value: float) -> float:
    if before is None:
        return value
    if sample.endswith("_created"):  # when a counter or histogram began: the earliest
        return min(before, value)
    if family.type == "gauge" or family.type == "info":
        if family.name.startswith(EARLIEST):
            return min(before, value)
        if family.name.startswith(LARGEST):
            return max(before, value)
    return before + value


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge_status(own: dict[str, Any], answers: dict[str, tuple[int, bytes] | None]) -> dict[str, Any]:
    """This process's `/v1/status` with every peer's sinks in it, and one line per process under `roles`."""
    merged = dict(own)
    merged["roles"] = [{"role": "ingest", "pid": os.getpid(), "state": "running"}]
    sinks: dict[str, Any] = dict(own.get("sinks", {}))
    for peer, answer in answers.items():
        pid = int(peer.split("-")[1])
        if answer is None or answer[0] != 200:
            merged["roles"].append({"role": "delivery", "pid": pid, "state": "not answering"})
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            theirs = orjson.loads(answer[1])
            merged["roles"].append({"role": "delivery", "pid": pid, "state": "running"})
            for name, view in theirs.get("sinks", {}).items():
                sinks[name] = _add_sink(sinks.get(name), view)
    merged["sinks"] = sinks
    return merged


def _add_sink(before: dict[str, Any] | None, view: dict[str, Any]) -> dict[str, Any]:
    """Two delivering processes' views of one sink: counts add up; for words, the first that is not "up" wins."""
    if before is None:
        return dict(view)
    added = dict(before)
    for key, value in view.items():
        old = added.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and isinstance(old, int | float):
            added[key] = old + value if not key.endswith("_at") and key != "retrying_since" else max(old, value)
        elif old in (None, "up"):
            added[key] = value
    return added
