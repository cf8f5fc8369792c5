"""A small client for apps that use no vendor SDK: hand records to the local daemon, durably, in about a millisecond.

`Client` (blocking, standard library only) and `AsyncClient` (aiohttp) speak to `POST /v1/records` over the Unix
socket or TCP. Neither ever blocks the app for longer than its timeout; when the daemon is down or slow they raise
`ShipperUnavailable` saying so, and a record the daemon refuses raises `ShipperRejected` with its reason.

    with Client(unix_socket="var/shipper.sock") as shipper:
        shipper.send("freeplay", {"messages": [...]}, path=f"/v2/projects/{pid}/sessions/{sid}/completions")
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from shipper.errors import ShipperError

DEFAULT_URL = "http://127.0.0.1:8790"
RECORDS_PATH = "/v1/records"


class ShipperUnavailable(ShipperError):
    """The daemon could not be reached or did not answer within the timeout; nothing is known to be spooled."""


class ShipperRejected(ShipperError):
    """The daemon answered and refused the request; nothing from it was spooled."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(f"shipper refused the records ({status}): {body.get('message', body)}")
        self.status = status
        self.body = dict(body)


@dataclass(frozen=True, slots=True)
class Ack:
    """What the daemon committed: spool ids, and for vendor records the answer their SDK would have had."""

    accepted: int
    ids: list[int]
    results: list[Any] = field(default_factory=list)


def record(
    sink: str,
    body: Any,
    *,
    method: str = "POST",
    path: str = "",
    query: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """One item of `/v1/records`; `path` is the vendor's own API path for vendor sinks."""
    item: dict[str, Any] = {"sink": sink, "method": method, "path": path, "body": body}
    if query:
        item["query"] = dict(query)
    if key is not None:
        item["key"] = key
    return item


def _encode(records: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in records)


def _ack(status: int, raw: bytes) -> Ack:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = {"message": raw[:200].decode("utf-8", "replace")}
    if status == 503:
        raise ShipperUnavailable(f"shipper cannot spool right now: {body.get('message', '')}")
    if status != 202:
        raise ShipperRejected(status, body)
    return Ack(body["accepted"], body["ids"], body.get("results", []))


def _headers(api_key_headers: Mapping[str, str] | None) -> dict[str, str]:
    return {"Content-Type": "application/x-ndjson", **(api_key_headers or {})}


class UnixConnection(http.client.HTTPConnection):
    """http.client over a Unix socket, with the same timeout for connecting and reading."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """Blocking client with one keep-alive connection; safe to share between threads."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        unix_socket: str | None = None,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = url
        self._unix_socket = unix_socket
        self._timeout = timeout
        self._headers = _headers(headers)
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def send(self, sink: str, body: Any, **fields: Any) -> Ack:
        return self.send_many([record(sink, body, **fields)])

    def send_many(self, records: Iterable[Mapping[str, Any]]) -> Ack:
        payload = _encode(records)
        with self._lock:
            status, raw = self._post(payload)
        return _ack(status, raw)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._unix_socket:
                self._conn = UnixConnection(self._unix_socket, self._timeout)
            else:
                host = self._url.split("://", 1)[-1].rstrip("/")
                self._conn = http.client.HTTPConnection(host, timeout=self._timeout)
        return self._conn

    def _post(self, payload: bytes) -> tuple[int, bytes]:
        # A kept-alive connection may have been closed by a daemon restart: one fresh retry, then give up.
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", RECORDS_PATH, body=payload, headers=self._headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                conn.close()
                self._conn = None
                if attempt == 2:
                    raise ShipperUnavailable(f"shipper closed the connection: {exc}") from exc
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                conn.close()
                self._conn = None
                raise ShipperUnavailable(f"shipper is not answering at {self._where()}: {exc}") from exc
        raise AssertionError("unreachable")

    def _where(self) -> str:
        return self._unix_socket or self._url


class AsyncClient:
    """asyncio client over one aiohttp session; use `async with` or call `close()`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        unix_socket: str | None = None,
        timeout: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = "http://localhost" if unix_socket else url.rstrip("/")
        self._unix_socket = unix_socket
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = _headers(headers)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, sink: str, body: Any, **fields: Any) -> Ack:
        return await self.send_many([record(sink, body, **fields)])

    async def send_many(self, records: Iterable[Mapping[str, Any]]) -> Ack:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=self._unix_socket) if self._unix_socket else None
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        try:
            async with self._session.post(
                self._url + RECORDS_PATH, data=_encode(records), headers=self._headers
            ) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            where = self._unix_socket or self._url
            raise ShipperUnavailable(f"shipper is not answering at {where}: {type(exc).__name__} {exc}") from exc
        return _ack(status, raw)
