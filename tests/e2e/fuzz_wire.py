"""The plumbing behind the ingest fuzzer (test_fuzz_ingest.py): a raw HTTP/1.1 client, an accept-all remote and the
daemon as a plain subprocess, all synchronous so hypothesis drives them without an event loop.

The client writes request bytes itself, so the fuzzer controls every byte of the request line, headers and body
(aiohttp's and http.client's own checks would refuse half of what a hostile client can send). The remote answers
every request with a 2xx (201 for POST and DELETE, 200 otherwise: the exact codes each vendor's SDK requires) and a
JSON body carrying a marker, so a proxied read can be told from a spool row's answer. Not responsible for what the
tests assert.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
# The key of the remote's answers: a 2xx answer carrying it was passed straight through (proxied), not spooled.
REMOTE_MARK = "__fuzz_remote_seq__"


# -- the client ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class NoAnswer(Exception):
    """The connection closed (or was reset) before a whole status line arrived."""


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon listens: `("tcp", (host, port))` or `("unix", path)`."""

    kind: str
    address: Any

    def connect(self, timeout: float) -> socket.socket:
        family = socket.AF_UNIX if self.kind == "unix" else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock


def build_request(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None, host: bytes = b"127.0.0.1"
) -> bytes:
    """Request bytes exactly as given; adds Host, Content-Length (when there is a body) and Connection: close."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def exchange(endpoint: Endpoint, raw: bytes, timeout: float = 20.0) -> Answer:
    """Send one request and read the whole answer (the server closes after it: Connection: close).

    A timeout propagates (a hang is a failure); a reset while sending is tolerated as long as an answer arrives:
    a server may refuse an oversized body before reading it.
    """
    with endpoint.connect(timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        chunks: list[bytes] = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return parse_answer(b"".join(chunks))


def parse_answer(data: bytes) -> Answer:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise NoAnswer(data[:200])
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise NoAnswer(data[:200])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    length = headers.get("content-length")
    body = rest[: int(length)] if length is not None and length.isdigit() else rest
    return Answer(int(parts[1]), headers, body)


def get(endpoint: Endpoint, path: str, timeout: float = 10.0) -> Answer:
    return exchange(endpoint, build_request(b"GET", path.encode(), [], None), timeout)


# -- the remote ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class AcceptAll:
    """A remote on 127.0.0.1 that takes every request with a 2xx and remembers it."""

    hits: list[Hit] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        remote = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with remote._lock:
                    remote.hits.append(Hit(self.command, self.path, dict(self.headers.items()), body))
                    seq = len(remote.hits)
                answer = orjson.dumps({REMOTE_MARK: seq})
                self.send_response(201 if self.command in ("POST", "DELETE") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fuzz-remote", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def snapshot(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)


# -- the daemon ---------------------------------------------------------------------------------------------------


@dataclass
class SyncDaemon:
    """`shipper run` as a subprocess, stderr kept in a file beside the config."""

    config: Path
    tcp: Endpoint
    unix: Endpoint
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.config.with_suffix(".log")

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipper", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}: {self.logs()[-4000:]}"
            with contextlib.suppress(OSError, NoAnswer):
                if get(self.tcp, "/healthz", timeout=2).status == 200:
                    return
            assert time.monotonic() < deadline, f"daemon did not become healthy: {self.logs()[-4000:]}"
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM, then kill -9 if the graceful stop hangs; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
