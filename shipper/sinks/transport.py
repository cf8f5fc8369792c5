"""The one place HTTP leaves shipper: a keep-alive aiohttp session per sink, errors turned into Outcomes.

Sinks hand it an OutRequest built from spool rows; it never follows redirects (a request goes only to the
configured base URL) and keeps only the start of an error answer. Not responsible for what a status means.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
from multidict import CIMultiDictProxy

from shipper.forward.retry import Outcome, Verdict
from shipper.sinks.base import OutRequest

# Enough of an error answer to understand a rejection, bounded so a hostile remote cannot fill the spool.
KEEP_RESPONSE_BYTES = 4096

Classifier = Callable[[int, CIMultiDictProxy[str], bytes], Outcome]


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of a body; `read(n)` alone may stop at whatever the buffer held."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class HttpTransport:
    def __init__(
        self, concurrency: int, timeout: float, keep_bytes: int = KEEP_RESPONSE_BYTES, ca_file: Path | None = None
    ) -> None:
        self._concurrency = concurrency
        self._timeout = timeout
        self._keep_bytes = keep_bytes
        # Verification is always on; a sink may only choose which authorities it trusts.
        self._ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._concurrency, keepalive_timeout=30, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("transport is not started")
        return self._session

    async def send(self, request: OutRequest, classify: Classifier) -> Outcome:
        try:
            async with self.session.request(
                request.method, request.url, data=request.body, headers=request.headers, allow_redirects=False
            ) as response:
                body = await read_capped(response.content, self._keep_bytes)
                return classify(response.status, response.headers, body)
        except TimeoutError:  # the deadline covers connecting too; counted as possibly taken, to be safe
            return Outcome(Verdict.RETRY, None, f"no answer within {self._timeout:g}s", unanswered=True)
        except aiohttp.ClientConnectorCertificateError as exc:
            return Outcome(Verdict.RETRY, None, f"TLS certificate not trusted: {exc.certificate_error}")
        except aiohttp.ClientSSLError as exc:
            return Outcome(Verdict.RETRY, None, f"TLS error: {exc}")
        except aiohttp.ClientConnectorDNSError as exc:
            return Outcome(Verdict.RETRY, None, f"cannot resolve host: {exc.os_error}")
        except aiohttp.ClientConnectorError as exc:
            return Outcome(Verdict.RETRY, None, f"cannot connect: {exc.os_error.strerror or exc.os_error}")
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            # Past connecting (the cases above): the request may have reached the remote before the connection broke.
            return Outcome(Verdict.RETRY, None, f"{type(exc).__name__}: {exc}", unanswered=True)
