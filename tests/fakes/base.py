"""The machinery every fake vendor shares: a real aiohttp server on 127.0.0.1, strict routing, faults, records.

A fake is an *upstream*: the place shipper forwards to. It serves only the routes its vendor's contract lists
(`../shared/contracts/vendors.md`); any other path is 404 and a known path with another method is 405. It checks
auth (401), the JSON content type (415) and the JSON body (400) before a vendor handler sees the request.

What it records:
- `attempts`: every request that reached it, with the status it answered (0 for a reset connection);
- `received`: only the requests it accepted (2xx), in arrival order;
- `violations`: broken ordering invariants (an update for an entity whose create never arrived, a PATCH path
  with the wrong upstream id); tests assert this stays empty;
- `duplicates`: creates that arrived again for an entity already stored (redeliveries);
- `max_in_flight`: the most requests it was handling at once (proof that independent entities flow in parallel).

How it fails on purpose: `fail()` adds a rule (a fault for matching requests, optionally only `times` times),
`chaos()` fails a fraction of requests chosen by a seeded RNG. A fault answers a status (503, 429 with
Retry-After, 400, 413, ...), waits first (`delay`), or resets the TCP connection. `stop()` closes the listener
(connections refused) and `start()` listens again on the same port with the stored data intact.
Not responsible for any vendor's semantics: subclasses register routes and handle them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support import free_port


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the fake saw it."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    raw: bytes
    at: float
    body: Any = None  # the parsed JSON body; None when there is none or it is not JSON
    json_ok: bool = True
    status: int = 0  # what the fake answered; 0: the connection was reset


@dataclass(frozen=True, slots=True)
class Fault:
    """How to misbehave for one request. `status` None and `reset` False: only the delay, then normal handling."""

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    reset: bool = False
    body: Any = None


UNAVAILABLE = Fault(503, body={"message": "service unavailable (fake)"})
RATE_LIMITED = Fault(429, retry_after="0", body={"message": "rate limited (fake)"})
RESET = Fault(reset=True)
BAD_REQUEST = Fault(400, body={"message": "bad request (fake)"})
TOO_LARGE = Fault(413, body={"message": "payload too large (fake)"})

Match = Callable[[Seen], bool]


@dataclass
class Rule:
    fault: Fault
    match: Match | None = None
    times: int | None = None  # None: for every matching request
    hits: int = 0

    def take(self, seen: Seen) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.match is not None and not self.match(seen):
            return False
        self.hits += 1
        return True


@dataclass
class Chaos:
    p: float
    faults: tuple[Fault, ...]
    rng: random.Random
    match: Match | None = None
    hits: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Seen, dict[str, str]], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    has_body: bool


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


def bearer(headers: CIMultiDictProxy[str]) -> str | None:
    """`Authorization: Bearer <key>`, exactly: another scheme or an empty key is no key."""
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    return key if scheme == "Bearer" and key and key == key.strip() else None


def error(status: int, message: str) -> Reply:
    return Reply(status, {"detail": message} if status == 422 else {"message": message})


class FakeVendor:
    """Base class: subclasses call `route()` in `__init__` and implement `key_from()`."""

    vendor = "fake"
    base_path = ""  # what the upstream base_url adds after host:port

    def __init__(self, api_keys: Iterable[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.api_keys: set[str] = set(api_keys)
        self.routes: list[Route] = []
        self.rules: list[Rule] = []
        self.chaos_plan: Chaos | None = None
        self.attempts: list[Seen] = []
        self.received: list[Seen] = []
        self.violations: list[str] = []
        self.duplicates = 0
        self.faulted: set[int] = set()  # seqs answered by an injected fault
        self.events: list[tuple[int, str, str]] = []  # (seq, operation, entity id) for every accepted write
        self._by_entity: dict[str, list[str]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts = 0
        self.latency = 0.0  # seconds every request takes before it is answered (faults and chaos still apply)
        self._seq = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The upstream base URL shipper's sink is configured with."""
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner
        self.starts += 1

    async def stop(self) -> None:
        """Close the listener and every open connection: from now on connections are refused."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeVendor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- scripting --------------------------------------------------------------------------------------------

    def fail(self, fault: Fault, match: Match | None = None, times: int | None = None) -> Rule:
        """Answer `fault` to matching requests (all of them, or the next `times`). Rules are tried in order."""
        rule = Rule(fault, match, times)
        self.rules.append(rule)
        return rule

    def chaos(self, p: float, faults: Iterable[Fault], seed: int = 0, match: Match | None = None) -> Chaos:
        """Fail a fraction `p` of matching requests, each with a fault drawn from `faults`, reproducibly."""
        self.chaos_plan = Chaos(p, tuple(faults), random.Random(seed), match)
        return self.chaos_plan

    def clear_faults(self) -> None:
        self.rules.clear()
        self.chaos_plan = None

    def _fault_for(self, seen: Seen) -> Fault | None:
        for rule in self.rules:
            if rule.take(seen):
                return rule.fault
        plan = self.chaos_plan
        if plan is not None and (plan.match is None or plan.match(seen)) and plan.rng.random() < plan.p:
            plan.hits += 1
            return plan.rng.choice(plan.faults)
        return None

    # -- routing ----------------------------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` is a regex over the whole path with named groups for its ids."""
        has_body = method in ("POST", "PATCH", "PUT")
        self.routes.append(Route(method, re.compile(pattern + r"\Z"), handler, has_body))

    def key_from(self, headers: CIMultiDictProxy[str]) -> str | None:
        """The api key a request carries, read the way the vendor reads it; None when there is none."""
        raise NotImplementedError

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        key = self.key_from(headers)
        return key is not None and key in self.api_keys

    def _resolve(self, seen: Seen) -> tuple[Route, dict[str, str]] | Reply:
        allowed: list[str] = []
        for candidate in self.routes:
            match = candidate.pattern.match(seen.path)
            if match is None:
                continue
            if candidate.method == seen.method:
                return candidate, match.groupdict()
            allowed.append(candidate.method)
        if allowed:
            return Reply(405, {"message": f"method {seen.method} not allowed"}, {"Allow": ", ".join(allowed)})
        return Reply(404, {"message": f"no route {seen.method} {seen.path} (fake {self.vendor})"})

    def _dispatch(self, seen: Seen) -> Reply:
        resolved = self._resolve(seen)
        if isinstance(resolved, Reply):
            return resolved
        candidate, params = resolved
        if not self.authorized(seen.headers):
            return error(401, "invalid or missing api key")
        if candidate.has_body:
            if seen.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
                return error(415, "content type must be application/json")
            if not seen.json_ok or not seen.raw:
                return error(400, "body is not valid JSON")
        elif seen.raw:
            return error(400, f"{seen.method} takes no body")
        return candidate.handler(seen, params)

    # -- serving ----------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self._seq += 1
        try:
            body, json_ok = (orjson.loads(raw) if raw else None), True
        except orjson.JSONDecodeError:
            body, json_ok = None, False
        seen = Seen(
            self._seq,
            request.method,
            request.path,
            dict(request.query),
            CIMultiDictProxy(CIMultiDict(request.headers)),
            raw,
            time.monotonic(),
            body,
            json_ok,
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, seen)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._fault_for(seen)
        if fault is not None and (fault.reset or fault.status is not None):
            self.faulted.add(seen.seq)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.reset:
            self.attempts.append(_with_status(seen, 0))
            _reset(request)
            return web.Response(status=500)
        if fault is not None and fault.status is not None:
            reply = Reply(fault.status, fault.body, {"Retry-After": fault.retry_after} if fault.retry_after else {})
        else:
            reply = self._dispatch(seen)
        answered = _with_status(seen, reply.status)
        self.attempts.append(answered)
        if 200 <= reply.status < 300:
            self.received.append(answered)
        return web.Response(
            status=reply.status,
            body=orjson.dumps(reply.body) if reply.body is not None else b"",
            headers=reply.headers,
            content_type="application/json" if reply.body is not None else None,
        )

    # -- queries for tests ------------------------------------------------------------------------------------

    def accepted(self, method: str | None = None, path: str | re.Pattern[str] | None = None) -> list[Seen]:
        """Accepted requests, filtered by method and by exact path or a regex matching the whole path."""
        out = []
        for seen in self.received:
            if method is not None and seen.method != method:
                continue
            if isinstance(path, str) and seen.path != path:
                continue
            if isinstance(path, re.Pattern) and not path.fullmatch(seen.path):
                continue
            out.append(seen)
        return out

    def rejected(self) -> list[Seen]:
        """Requests the fake itself refused (not injected faults): wrong path, method, auth, body or order."""
        return [s for s in self.attempts if s.status >= 400 and s.seq not in self.faulted]

    def event(self, seen: Seen, operation: str, entity: str) -> None:
        self.events.append((seen.seq, operation, entity))
        self._by_entity.setdefault(entity, []).append(operation)

    def violate(self, seen: Seen, what: str) -> None:
        self.violations.append(f"{seen.method} {seen.path}: {what}")

    def operations(self, entity: str) -> list[str]:
        """The accepted writes to one entity, in the order the fake applied them."""
        return list(self._by_entity.get(entity, ()))

    def keys_used(self) -> set[str | None]:
        """Every api key the accepted requests carried."""
        return {self.key_from(seen.headers) for seen in self.received}


def _with_status(seen: Seen, status: int) -> Seen:
    return dataclasses.replace(seen, status=status)


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST, as a crashed proxy or a dropped NAT entry would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
