"""The benchmark's running order: SQLite ceiling, then (a) ingest, (o) OTLP spans in, (b) single records, (c) end to
end, (e) vendor sinks forwarding, token counting on and then off (the runs (d), peak RSS per process and in total,
is read from), (p) the vendor path, (f) the vendor path with one or two ingest and delivery processes.

Each scenario gets a fresh daemon and an empty spool; the fake remote runs in its own process for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import ceiling, daemon, load, report, usage
from bench.loop import run_loop
from bench.otlp import SPANS, ExportRequests
from bench.records import Records
from bench.remote import RemoteProcess
from bench.vendors import VendorCalls
from bench.wire import now

INGEST_BATCH = 100  # records per NDJSON request: ~110 KB, what a client flushing every few ms might send
INGEST_CONNECTIONS = 8  # enough concurrent clients to keep the spool writer's groups full
VENDOR_PATH_CONNECTIONS = 64  # the SDKs' keep-alive clients of a busy app
SINGLE_CONNECTIONS = 16  # "several concurrent keep-alive clients" for the single-record maximum
LATENCY_RATE = 2000.0  # issue 12's ack p99 target is at this rate
# (p) offered at a steady rate: the most delivery kept up with (2026-12-02, one delivery process), so the figure
# says whether it still does; where it falls behind, the backlog growth shows by how much.
SUSTAINED_RATE = 4000.0
# (f): the vendor path with one ingest and one delivery process (what "auto" gives on 2 cores), then two of each kind.
SCALING = ((1, 1), (1, 2), (2, 1))
LATENCY_CONNECTIONS = 32
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    warmup: float
    window: float
    latency_seconds: float
    e2e_batch_records: int
    e2e_replay_records: int
    e2e_deadline: float
    ceiling_seconds: float
    vendor_calls: int


FULL = Plan(1.0, 10.0, 10.0, 200_000, 40_000, 60.0, 1.5, 20_000)
QUICK = Plan(0.5, 3.0, 4.0, 60_000, 12_000, 20.0, 0.7, 6_000)


class Bench:
    def __init__(self, plan: Plan, src: Path, profile: Path | None, quiet_budget: float) -> None:
        self.plan = plan
        self.src = src
        self.profile = profile
        self.quiet_budget = quiet_budget
        self.records = Records()
        self.remote = RemoteProcess()
        self.scenarios: dict[str, dict[str, Any]] = {}

    @contextlib.asynccontextmanager
    async def _daemon(
        self, name: str, durability: str, sink: str, tokens: bool = True, workers: tuple[int, int] | None = None
    ) -> AsyncIterator[daemon.Daemon]:
        self.quiet_budget = await usage.wait_for_quiet(self.quiet_budget)
        profile = self.profile / f"{name}.txt" if self.profile else None
        async with daemon.running(durability, sink, self.remote.url, self.src, profile, tokens, workers) as d:
            yield d

    def _pids(self, d: daemon.Daemon) -> dict[str, list[int]]:
        assert self.remote.pid is not None
        return {"daemon": d.family(), "remote": [self.remote.pid], "harness": [os.getpid()]}

    async def _measured(self, d: daemon.Daemon, start: float, end: float, work: Any) -> dict[str, Any]:
        """Run `work` and add the CPU each process used inside [start, end) and the daemon's peak RSS."""

        async def cpu() -> dict[str, float]:
            await asyncio.sleep(max(0.0, start - now()))
            before = usage.snapshot(self._pids(d), now())
            await asyncio.sleep(max(0.0, end - now()))
            return usage.percentages(before, usage.snapshot(self._pids(d), now()))

        result, used = await asyncio.gather(work, cpu())
        return {**result, **used, "peak_rss_mb": d.peak_rss_mb(), "peak_rss_mb_by_process": d.peak_rss_by_process()}

    async def ingest(self, durability: str, sink: str) -> None:
        """(a) NDJSON batches over the Unix socket, closed loop."""
        name = f"a.ingest.{durability}.{sink}"
        async with self._daemon(name, durability, sink) as d:
            start = now() + self.plan.warmup
            end = start + self.plan.window
            build = lambda seq: self.records.ndjson_request(seq, INGEST_BATCH)  # noqa: E731
            work = load.closed_loop(d.unix, INGEST_CONNECTIONS, build, INGEST_BATCH, start, end)
            self.scenarios[name] = await self._measured(d, start, end, work)

    async def otlp(self) -> None:
        """(o) OTLP/HTTP export requests of SPANS spans (protobuf) over TCP into the spool, closed loop, with the
        routed vendor sinks down: spans/s through the receiver, each span three vendor rows."""
        requests = ExportRequests()
        async with self._daemon("o.otlp", "fsync", "otlp") as d:
            start = now() + self.plan.warmup
            end = start + self.plan.window
            work = load.closed_loop(d.otlp, INGEST_CONNECTIONS, requests.request, SPANS, start, end)
            result = await self._measured(d, start, end, work)
            result["rows_per_s"] = result["records_per_s"] * len(daemon.vendors.VENDORS)
            result["request_bytes"] = requests.body_bytes
            self.scenarios["o.otlp"] = result

    async def single(self) -> None:
        """(b) one record per request over TCP: the closed-loop maximum, then latency at a fixed open-loop rate."""
        async with self._daemon("b.single", "fsync", "batch") as d:
            start = now() + self.plan.warmup
            end = start + self.plan.window
            work = load.closed_loop(d.http, SINGLE_CONNECTIONS, self.records.single_request, 1, start, end)
            self.scenarios["b.single.max"] = await self._measured(d, start, end, work)
            await asyncio.sleep(1.0)  # let the forwarder drain what the maximum left queued
            start = now() + 0.3
            end = start + self.plan.latency_seconds
            build = lambda seq: self.records.single_request(10**8 + seq)  # noqa: E731
            work = load.open_loop(d.http, build, LATENCY_RATE, start, self.plan.latency_seconds, LATENCY_CONNECTIONS)
            self.scenarios["b.single.latency"] = await self._measured(d, start, end, work)

    async def end_to_end(self, sink: str, total: int) -> None:
        """(c) from the first record sent until the remote holds all `total` of them."""
        name = f"c.e2e.{sink}"
        async with self._daemon(name, "fsync", sink) as d:
            base = self.remote.records
            start = now()
            pusher = asyncio.create_task(load.push(d.unix, self.records, total, INGEST_BATCH, INGEST_CONNECTIONS))
            before = usage.snapshot(self._pids(d), start)
            while self.remote.records - base < total and now() - start < self.plan.e2e_deadline:
                if pusher.done() and pusher.exception() is not None:
                    break
                await asyncio.sleep(0.01)
            received = self.remote.records - base
            complete = received >= total
            done = self.remote.last_at if complete else now()
            used = usage.percentages(before, usage.snapshot(self._pids(d), now()))
            ingest_done = await pusher if pusher.done() else None
            if ingest_done is None:
                pusher.cancel()
            self.scenarios[name] = {
                "records_per_s": received / (done - start),
                "records": total,
                "received": received,
                "complete": complete,
                "seconds": done - start,
                "ingest_seconds": None if ingest_done is None else ingest_done - start,
                **used,
                "peak_rss_mb": d.peak_rss_mb(),
            }

    async def vendors(self, total: int, tokens: bool) -> None:
        """(e) vendor drop-in calls, counted and priced, until the remote holds them all: peak RSS as deployed. With
        `tokens` off, the same calls with `[enrich] tokens = false`: what the processes hold without token counting
        (and so without pricing, which needs the counts), the other half of (d)."""
        calls = VendorCalls()
        name = "e.vendors" if tokens else "e.vendors.tokens_off"
        async with self._daemon(name, "fsync", "vendors", tokens) as d:
            base = self.remote.records
            start = now()
            sent = await load.fixed_count(d.unix, calls.request, total, SINGLE_CONNECTIONS)
            # The remote counts in another process's shared memory: there is no event to wait on, only the clock.
            while self.remote.records - base < total and now() - start < self.plan.e2e_deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            received = self.remote.records - base
            self.scenarios[name] = {
                **sent,
                "records": total,
                "received": received,
                "complete": received >= total,
                "seconds": now() - start,
                "records_per_s": received / (now() - start),
                "peak_rss_mb": d.peak_rss_mb(),
                "peak_rss_mb_by_process": d.peak_rss_by_process(),
                "rss_mb_at_end": d.rss_mb(),
                "pss_mb_at_end": d.pss_mb(),
            }

    async def vendor_path(
        self, name: str = "p.vendor_path", workers: tuple[int, int] | None = None, offered: float | None = None
    ) -> None:
        """(p) the vendor path: Freeplay completion creates, one per request over TCP from 64 keep-alive clients,
        forwarded one request per record (replay mode). Delivered per second beside acknowledged per second in the
        same window: where delivery is below, the backlog grows by the difference. With `workers` (ingest,
        delivery processes), (f): how the same figures move with the processes. With `offered`, the calls come at
        that rate on a fixed schedule (open loop) instead of as fast as they are answered: whether delivery keeps up
        with a steady stream, the rate the issue's "sustained" means."""
        calls = VendorCalls(vendors=("freeplay",))
        async with self._daemon(name, "fsync", "freeplay", workers=workers) as d:
            start = now() + self.plan.warmup
            end = start + self.plan.window

            async def delivered() -> int:
                await asyncio.sleep(max(0.0, start - now()))
                before = self.remote.records
                await asyncio.sleep(max(0.0, end - now()))
                return self.remote.records - before

            if offered is None:
                work = load.closed_loop(d.http, VENDOR_PATH_CONNECTIONS, calls.request, 1, start, end)
            else:
                work = load.open_loop(d.http, calls.request, offered, start, end - start, VENDOR_PATH_CONNECTIONS)
            result, forwarded = await asyncio.gather(self._measured(d, start, end, work), delivered())
            result["delivered_per_s"] = forwarded / (end - start)
            result["backlog_growth_per_s"] = result["records_per_s"] - result["delivered_per_s"]
            self.scenarios[name] = result

    async def run(self, only: set[str]) -> dict[str, Any]:
        scratch = daemon.SCRATCH
        scratch.mkdir(parents=True, exist_ok=True)
        bodies = [orjson.dumps(orjson.loads(self.records.line(i))["body"]) for i in range(32)]
        seconds = self.plan.ceiling_seconds
        ceilings = {
            f"{sync}/{group}": ceiling.measure(scratch, sync, group, seconds, bodies)
            for sync, group in (("FULL", 1), ("FULL", SINGLE_CONNECTIONS), ("FULL", 256), ("NORMAL", 256))
        }
        self.remote.start()
        try:
            if "a" in only:
                for durability in ("fsync", "os"):
                    for sink in ("batch", "down"):
                        await self.ingest(durability, sink)
            if "o" in only:
                await self.otlp()
            if "b" in only:
                await self.single()
            if "c" in only:
                await self.end_to_end("batch", self.plan.e2e_batch_records)
                await self.end_to_end("replay", self.plan.e2e_replay_records)
            if "e" in only:
                for tokens in (True, False):
                    await self.vendors(self.plan.vendor_calls, tokens)
            if "p" in only:
                await self.vendor_path()
                await self.vendor_path("p.vendor_path.sustained", offered=SUSTAINED_RATE)
            if "f" in only:
                for ingest, delivery in SCALING:
                    await self.vendor_path(f"f.vendor_path.{ingest}i{delivery}d", (ingest, delivery))
        finally:
            self.remote.stop()
        return {"ceiling": ceilings, "scenarios": self.scenarios}


def _meta(args: argparse.Namespace, plan: Plan, records: Records) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "shipper_src": str(args.shipper_src),
        "shipper_commit": _commit(args.shipper_src),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "plan": asdict(plan),
        "record_body_bytes": records.body_bytes,
        "record_line_bytes": records.line_bytes,
        "ingest_batch": INGEST_BATCH,
        "ingest_connections": INGEST_CONNECTIONS,
        "otlp_spans_per_request": SPANS,
        "single_connections": SINGLE_CONNECTIONS,
        "latency_rate": LATENCY_RATE,
        "sustained_rate": SUSTAINED_RATE,
        "latency_connections": LATENCY_CONNECTIONS,
    }


def _commit(src: Path) -> str:
    """The checkout's commit, `+dirty` when shipper/ has uncommitted changes; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, check=True)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "shipper"], capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.decode().strip() + ("+dirty" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter windows and fewer records (~1 minute)")
    parser.add_argument(
        "--only",
        default="aobcepf",
        help="scenarios to run, any of a, o, b, c, e, p, f (default: all; e gives (d); f is p with 1 or 2 processes)",
    )
    parser.add_argument("--profile", type=Path, help="sample each daemon with py-spy into DIR/<scenario>.txt")
    parser.add_argument("--shipper-src", type=Path, default=daemon.REPO, help="run shipper from this source tree")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each scenario, wait while other work keeps the host busy; at most SECONDS in all",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    bench = Bench(plan, args.shipper_src.resolve(), args.profile, args.wait_quiet)
    started = time.monotonic()
    measured = run_loop(bench.run(set(args.only)))
    results = {"meta": _meta(args, plan, bench.records), **measured}
    results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
    results["meta"]["load_average_at_end"] = os.getloadavg()
    results["figures"] = report.figures(measured)
    print(report.table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    print(f"\nwritten to {args.out}")
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(f"harness CPU: {own.ru_utime + own.ru_stime:.1f}s over {results['meta']['wall_seconds']}s")
    return 0
