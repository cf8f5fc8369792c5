"""What each process of a shipper does: the whole daemon alone, or one role beside others on one spool.

`all` is one process doing everything (the shape of a small install and of most tests). `relay` consumes a JetStream
stream instead of a spool and delivers what sidecars published there (queue/jetstream/), keeping only its dead
letters in a spool file of its own; it serves the admin listener alone, and no supervisor starts it. Under the
supervisor (supervisor.py), `ingest` processes serve the listeners the supervisor bound and append; `delivery`
processes lease and send. Both attach to the spool the supervisor claimed (spool/claim.py); an append in one wakes
the others (spool/wakes.py); a delivery process answers the operations routes on a private socket, so the ingest
process that serves `/metrics` and `/v1/status` can answer for all (ops/gather.py). Not responsible for the daemon's
lifecycle (daemon.py) or for starting processes (supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import time
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web

from shipper.config import Config
from shipper.config.process import SpoolConfig
from shipper.errors import ConfigError, SpoolError
from shipper.ops.gather import control_address, delivering_peers
from shipper.ops.routes import Live, add_routes
from shipper.queue.jetstream.queue import StreamQueue
from shipper.spool import Spool
from shipper.spool.bounds import Bounds
from shipper.spool.claim import RECOVERED_ENV
from shipper.spool.owners import alive
from shipper.spool.store import DeathHook
from shipper.spool.wakes import WakeListener, Waker
from shipper.tasks import stop

# How often a delivery process looks for dead processes' leases to give back.
GIVE_BACK_INTERVAL = 5.0
# How often an ingest process that is stopping looks whether the deliveries are done.
PEERS_POLL = 0.05


class Role(enum.Enum):
    ALL = "all"
    INGEST = "ingest"
    DELIVERY = "delivery"
    RELAY = "relay"

    @property
    def serves(self) -> bool:
        """Serves the ingest and admin listeners."""
        return self in (Role.ALL, Role.INGEST)

    @property
    def delivers(self) -> bool:
        return self is not Role.INGEST


async def open_spool(
    role: Role, supervised: bool, spool: SpoolConfig, bounds: Bounds, on_death: DeathHook, stack: AsyncExitStack
) -> Spool:
    """Alone, the daemon claims its spool; a role attaches to the one its supervisor claimed (or, run alone, shares
    it with other roles alone), and wakes (or is woken by) the processes beside it."""
    if role in (Role.ALL, Role.RELAY):
        opened = await Spool.open(spool.path, spool.durability, spool.lease_timeout, bounds, on_death)
        stack.push_async_callback(opened.close)
        return opened
    joining = Spool.attach if supervised else Spool.join
    opened = await joining(spool.path, spool.durability, spool.lease_timeout, bounds, on_death, role.value)
    stack.push_async_callback(opened.close)
    if role is Role.INGEST:
        recovered = os.environ.pop(RECOVERED_ENV, None)
        opened.recovered_from = Path(recovered) if recovered else None
        waker = Waker(spool.path)
        stack.callback(waker.close)
        opened.on_added(waker.added)
    else:
        listener = WakeListener(opened.owner, opened.announce)
        stack.callback(listener.close)
        keeper = asyncio.create_task(_give_back_dead(opened), name="give-back-dead-leases")
        stack.push_async_callback(stop, keeper)
    return opened


async def open_relay(config: Config, spool: Spool, stack: AsyncExitStack) -> StreamQueue:
    """A relay's queue over the stream `[relay]` names, its dead letters going to `spool`; closed by the stack after
    the forwarders drained (their acknowledgements finish first)."""
    if config.relay is None:
        raise ConfigError("[relay]: missing: a relay needs the stream it consumes (servers, stream, partitions)")
    queue = StreamQueue(config.relay, os.environ, spool, list(config.sinks), config.spool.lease_timeout)
    await queue.start()
    stack.push_async_callback(queue.close)
    return queue


async def _give_back_dead(spool: Spool) -> None:
    """A delivery process gives back the leases of any process of this spool that died, every few seconds: with a
    supervisor that sees a death it is done at once already; with roles alone, this is how it is done at all."""
    while True:
        await asyncio.sleep(GIVE_BACK_INTERVAL)
        with contextlib.suppress(SpoolError):
            await spool.give_back_dead()


async def deliveries_done(spool: Path, deadline: float) -> None:
    """In a stopping ingest process: until no delivery process of this spool lives (or the deadline), so the
    listeners keep answering (503 `stopping`, `/readyz` 503) for as long as the shipper drains, as one process does.
    Another process's exit raises no event here: its presence lock is looked at every PEERS_POLL."""
    while time.monotonic() < deadline and any(alive(spool, peer) for peer in delivering_peers(spool)):  # noqa: ASYNC110
        await asyncio.sleep(PEERS_POLL)


async def serve_control(live: Live, owner: str, stack: AsyncExitStack) -> None:
    """A delivery process's operations routes, on a socket only the processes of this host's network can reach."""
    app = web.Application()
    add_routes(app, live)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(control_address(owner))
    except OSError:
        sock.close()
        raise
    await web.SockSite(runner, sock).start()
