"""Header values shipper cannot use are refused at the edge, one request at a time; ingest never stops for one.

A byte that is not UTF-8 in any header, or anything but printable ASCII in a credential header (a key pasted with a
no-break space, which `requests` sends as the Latin-1 byte 0xA0), gets 400 `invalid_header` naming the header, or
401 `invalid_token` for shipper's own token. Nothing is spooled, and the very next request on TCP and on the Unix
socket is taken as usual; the daemon still stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shipper.spool.reader import SpoolReader, read
from tests.e2e.fuzz_wire import Answer, Endpoint, build_request, exchange
from tests.fakes.rig import vendor_rig
from tests.fakes.snippets import KW_KEY
from tests.hardening import http_sink, item, post_records
from tests.support import Daemon, FakeRemote, unix_session, wait_for, write_config

KW_LOG = b"/api/request-logs/create/"
HL_LOG = b"/v5/prompts/log"
FP_LOG = b"/api/v2/projects/p/sessions/s/completions"


def tcp(daemon: Daemon) -> Endpoint:
    host, port = daemon.http.rsplit(":", 1)
    return Endpoint("tcp", (host, int(port)))


async def raw_post(endpoint: Endpoint, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
    request = build_request(b"POST", path, [(b"Content-Type", b"application/json"), *headers], body)
    return await asyncio.to_thread(exchange, endpoint, request, 10.0)


BAD_HEADERS = [
    pytest.param(KW_LOG, b"Authorization", b"Bearer k\xe9y", id="keywordsai-latin1-byte"),
    pytest.param(KW_LOG, b"Authorization", b"Bearer " + KW_KEY.encode() + b"\xc2\xa0", id="keywordsai-utf8-nbsp"),
    pytest.param(FP_LOG, b"Authorization", b"Bearer fp-key\xa0", id="freeplay-trailing-nbsp-as-requests-sends-it"),
    pytest.param(HL_LOG, b"X-API-KEY", b"hl-key\xa0", id="humanloop-x-api-key"),
    pytest.param(KW_LOG, b"X-Trace-Note", b"caf\xe9", id="any-header-not-utf8"),
]


@pytest.mark.parametrize(("path", "name", "value"), BAD_HEADERS)
async def test_a_header_shipper_cannot_use_is_refused_alone_and_ingest_goes_on(
    tmp_path: Path, path: bytes, name: bytes, value: bytes
) -> None:
    async with vendor_rig(tmp_path) as rig:
        endpoint = tcp(rig.daemon)
        answer = await raw_post(endpoint, path, [(name, value)], b'{"model": "m", "prompt_messages": []}')
        assert answer.status == 400, answer
        assert answer.json()["error"] == "invalid_header"
        assert answer.json()["field"].lower() == name.decode().lower()
        assert read(rig.spool, SpoolReader.waiting) == 0

        # The next requests, over both listeners, are taken as usual: nothing was stuck behind the bad one.
        good = [(b"Authorization", b"Bearer " + KW_KEY.encode())]
        assert (await raw_post(endpoint, KW_LOG, good, b'{"model": "m"}')).status == 200
        unix = Endpoint("unix", str(rig.daemon.unix))
        assert (await raw_post(unix, KW_LOG, good, b'{"model": "m"}')).status == 200
        await wait_for(lambda: len(rig.kw.logs) == 2, timeout=20)
        assert await rig.daemon.terminate(timeout=15) == 0


async def test_a_token_with_a_byte_that_is_not_utf8_is_401_not_500(tmp_path: Path) -> None:
    remote = FakeRemote()
    await remote.start()
    config = write_config(tmp_path, http_sink(remote.url), ingest_extra='token = "tok-1234567890abcdef"')
    daemon = Daemon.from_config(config)
    try:
        await daemon.start()
        endpoint = tcp(daemon)
        records = b'{"sink": "remote", "body": {"n": 1}}'
        answer = await raw_post(endpoint, b"/v1/records", [(b"X-Shipper-Token", b"tok-\xff")], records)
        assert answer.status == 401, answer
        assert answer.json()["error"] == "invalid_token"
        answer = await raw_post(endpoint, b"/v1/records", [(b"X-Shipper-Token", b"tok-1234567890abcdef")], records)
        assert answer.status == 202, answer
        async with unix_session(daemon.unix) as session:
            assert (await post_records(session, "http://shipper/v1/records", [item(2)])).status == 202
        assert await daemon.terminate(timeout=15) == 0
    finally:
        await daemon.ensure_stopped()
        await remote.stop()
