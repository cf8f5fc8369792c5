"""The one place HTTP leaves shipper: a keep-alive aiohttp session per sink, errors turned into Outcomes.

Sinks hand it an OutRequest built from spool rows; it never follows redirects (a request goes only to the
configured base URL) and keeps only the start of an error answer. Every request says who sent it:
`User-Agent: shipper/<version>`, so a vendor's logs and support can tell shipper's traffic from an SDK's; a proxied
call adds the app's own agent (`user_agent`). Not responsible for what a status means.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
from multidict import CIMultiDictProxy

from shipper import __version__
from shipper.core.retry import Outcome, Verdict
from shipper.errors import ConfigError
from shipper.sinks.base import OutRequest

# Enough of an error answer to understand a rejection, bounded so a hostile remote cannot fill the spool.
KEEP_RESPONSE_BYTES = 4096

Classifier = Callable[[int, CIMultiDictProxy[str], bytes], Outcome]

USER_AGENT = f"shipper/{__version__}"
# An app's agent is a product token or two; past this it is noise a vendor's logs would have to carry.
MAX_APP_AGENT = 200


def user_agent(app_agent: str | None) -> str:
    """Shipper's agent, with the app's own in a comment (`shipper/0.1.0 (via freeplay-python/0.6.1)`) when it sent
    one: a call shipper passes on keeps visible to the vendor which SDK made it, as it was without shipper."""
    agent = " ".join((app_agent or "").split())[:MAX_APP_AGENT]  # one line, whatever the app sent
    return f"{USER_AGENT} (via {agent})" if agent else USER_AGENT


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


def trust(sink: str, ca_file: Path | None) -> ssl.SSLContext | bool:
    """Verification is always on; a sink may only choose which authorities it trusts. A CA file that cannot be
    loaded stops the start with the sink's key named, never a traceback."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"sinks.{sink}.ca_file: {ca_file} holds no usable certificate ({exc.reason})") from None
    except OSError as exc:  # missing or unreadable
        raise ConfigError(f"sinks.{sink}.ca_file: cannot load {ca_file}: {exc.strerror or exc}") from None


class HttpTransport:
    def __init__(
        self,
        concurrency: int,
        timeout: float,
        keep_bytes: int = KEEP_RESPONSE_BYTES,
        ca_file: Path | None = None,
        *,
        sink: str,
    ) -> None:
        """`sink` names the sink in a start-up error (its `ca_file`)."""
        self._concurrency = concurrency
        self._timeout = timeout
        self._keep_bytes = keep_bytes
        self._ssl = trust(sink, ca_file)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:  # started already (a reload starts a sink before the fleet takes it)
            return
        connector = aiohttp.TCPConnector(limit=self._concurrency, keepalive_timeout=30, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            auto_decompress=True,
            headers={"User-Agent": USER_AGENT},  # not aiohttp's own: the remote sees shipper, with its version
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
