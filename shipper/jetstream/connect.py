"""Connecting to NATS for as long as it takes, as a sidecar's `jetstream` sink and a relay both do: nats-py tries
every server each second and never gives up once connected; a first connection that fails is tried again, each
failure handed to the link's error callback (which logs it throttled, never with a secret).
Not responsible for the options (options.py) or for what the connection carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nats.aio.client import Client

RECONNECT_WAIT = 1  # seconds (nats-py takes an int)
CONNECT_TIMEOUT = 2


def describe(exc: BaseException) -> str:
    """An error's type and message, as logs and retry details name it (nats-py's messages hold no secret)."""
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text else "")


async def connect(
    client: Client,
    servers: list[str],
    name: str,
    options: Mapping[str, Any],
    on_error: Callable[[Exception], Awaitable[None]],
) -> None:
    """Until `client` is connected to one of `servers`."""
    while True:
        try:
            await client.connect(
                servers,
                name=name,
                connect_timeout=CONNECT_TIMEOUT,
                reconnect_time_wait=RECONNECT_WAIT,
                max_reconnect_attempts=-1,
                error_cb=on_error,
                **options,
            )
            return
        except Exception as exc:  # whatever it is, the answer is to try again later
            await on_error(exc)
            await asyncio.sleep(RECONNECT_WAIT)
