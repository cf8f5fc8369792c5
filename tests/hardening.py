"""Helpers for the hardening tests (bounded disk, disk full, damaged spool, remote faults, limits, security).

Small pieces of the world around shipper: a remote that can be switched down and up, a size-limited tmpfs, a
self-signed certificate authority made with the `openssl` CLI, and requests whose answer is returned whole.
Nothing here imitates shipper's own parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.support import FakeRemote, ndjson


def http_sink(
    url: str,
    *,
    name: str = "remote",
    concurrency: int = 4,
    initial: float = 0.02,
    cap: float = 0.2,
    timeout: float = 10,
    extra: str = "",
) -> str:
    return f"""
[sinks.{name}]
type = "http"
base_url = "{url}"
concurrency = {concurrency}
retry_initial_backoff = {initial}
retry_max_backoff = {cap}
timeout = {timeout}
{extra}
"""


def item(n: int, sink: str = "remote", pad: int = 0, **body: Any) -> dict[str, Any]:
    if pad:
        body["pad"] = "x" * pad
    return {"sink": sink, "path": "/ingest", "body": {"n": n, **body}}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.raw)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    async with session.request(method, url, data=data, headers=headers) as response:
        raw = await response.read()
        return Answer(response.status, dict(response.headers), raw)


async def post_records(
    session: aiohttp.ClientSession, url: str, items: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> Answer:
    """POST NDJSON to `url` (the full /v1/records URL) and return the answer, whatever it is."""
    return await send(session, "POST", url, ndjson(items), {"Content-Type": "application/x-ndjson", **(headers or {})})


def numbers(remote: FakeRemote) -> list[int]:
    """The `n` of every record body the remote accepted, in arrival order (duplicates kept)."""
    return [body["n"] for body in remote.bodies()]


class Switch:
    """A remote behaviour: answers `status` while on, passes through (None) while off."""

    def __init__(self, status: int = 503, headers: dict[str, str] | None = None, on: bool = True) -> None:
        self.on = on
        self.status = status
        self.headers = headers or {}

    def __call__(self, request: web.Request, body: bytes) -> web.Response | None:
        if self.on:
            return web.json_response({"error": "down (test)"}, status=self.status, headers=self.headers)
        return None


class Gate:
    """An async remote behaviour that holds every request until `open()`."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self, request: web.Request, body: bytes) -> web.StreamResponse | None:
        await self.event.wait()
        return None

    def open(self) -> None:
        self.event.set()


# --- filesystems --------------------------------------------------------------------------------------------------


def can_mount() -> bool:
    return shutil.which("mount") is not None and shutil.which("umount") is not None


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs mounted at `where` for the block's duration (needs root, which tests have)."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        # Lazy: a daemon that survived a failed test must not leave the mount behind.
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path, leave: int = 0, chunk: int = 64 * 1024) -> int:
    """Write zeros to `path` until the filesystem is full, then give back `leave` bytes; returns the file's size."""
    written = 0
    block = b"\0" * chunk
    with open(path, "wb", buffering=0) as out:
        size = chunk
        while size >= 512:
            try:
                out.write(block[:size])
                written += size
            except OSError:
                size //= 2
        with contextlib.suppress(OSError):
            out.flush()
    written = max(0, written - leave)
    os.truncate(path, written)
    return written


# --- TLS ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the authority's certificate: what a client trusts
    cert: Path  # the server's certificate, signed by the authority, for 127.0.0.1 and localhost
    key: Path


def make_certs(directory: Path, names: str = "IP:127.0.0.1, DNS:localhost") -> Certs:
    """A private CA and a server certificate it signed for `names` (subjectAltName), with the `openssl` CLI."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName = {names}\nbasicConstraints = CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=shipper test CA")  # fmt: skip
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return Certs(ca, cert, key)


@dataclass
class TlsRemote(FakeRemote):
    """FakeRemote over HTTPS with the given certificate (serves https://127.0.0.1:port)."""

    certs: Certs | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.certs is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certs.cert, self.certs.key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context, reuse_address=True).start()
