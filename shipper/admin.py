"""The admin listener: `/metrics`, `/healthz`, `/readyz` and `/v1/status` on an address of their own.

Scraping or probing shipper from outside its host or pod should not mean opening ingest, where records are written
(Fluent Bit's HTTP_Server and Vector's internal_metrics are separate listeners for the same reason). This is a second,
small aiohttp application serving the very handlers ingest serves (ops/routes.py), and nothing else: no record can
be written through it. Off unless `[admin] http` is set. Bound to loopback it is open like ingest; on any other
address config/listeners.py requires `[admin] token`, asked for `/metrics` and `/v1/status`, while the two probes
stay open so a kubelet or load balancer needs no secret. Not responsible for what the routes answer (ops/routes.py).
"""

from __future__ import annotations

import hmac
import socket

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from shipper.config.listeners import AdminConfig, parse_host_port
from shipper.errors import ConfigError
from shipper.ingest.guard import OPERATIONS
from shipper.ingest.responses import Handler, error_response
from shipper.ops.routes import Live, add_routes
from shipper.vendors.base import bearer

# Probes carry no secret: kubelet and load balancers reach them without one, as ingest's /healthz.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Scrapes are small GETs: nothing on this listener reads a body.
MAX_BODY_BYTES = 1024
# Stopping waits this long at most for a scrape being answered; the daemon's drain happened before.
STOP_TIMEOUT = 1.0


def _token_check(secret: SecretStr) -> Middleware:
    token = secret.get_secret_value().encode()

    def matches(offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), token)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        offered = (bearer(request.headers), request.headers.get("X-Shipper-Token"))
        if request.path in OPEN_PATHS or any(matches(candidate) for candidate in offered):
            return await handler(request)
        message = "send [admin] token as Authorization: Bearer or X-Shipper-Token"
        response = error_response(401, "invalid_token", message)
        response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="shipper-admin"'
        return response

    return check


async def _elsewhere(request: web.Request) -> web.Response:
    """Anything but a GET of the four routes: say what this listener serves (records go to ingest)."""
    if request.path in OPERATIONS:
        response = error_response(405, "method_not_allowed", f"{request.method} {request.path}: only GET is served")
        response.headers[hdrs.ALLOW] = "GET, HEAD"
        return response
    served = ", ".join(sorted(OPERATIONS))
    return error_response(404, "not_found", f"{request.method} {request.path}: the admin listener serves {served}")


def build_admin_app(live: Live, token: SecretStr | None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_token_check(token)] if token else [])
    add_routes(app, live)
    app.router.add_route("*", "/{tail:.*}", _elsewhere)
    return app


class AdminServer:
    """Started after ingest and stopped with it; does nothing when `[admin] http` is empty."""

    def __init__(self, live: Live, config: AdminConfig, inherited: tuple[socket.socket, ...] = ()) -> None:
        """`inherited`: the listener a supervisor bound for this process (then `[admin] http` is not bound here)."""
        self._live = live
        self._config = config
        self._inherited = inherited
        self._runner: web.AppRunner | None = None
        self.addresses: list[str] = []

    async def start(self) -> None:
        if not self._config.http:
            return
        host, port = parse_host_port(self._config.http)
        runner = web.AppRunner(
            build_admin_app(self._live, self._config.token),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=STOP_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        if self._inherited:
            for sock in self._inherited:
                inherited = web.SockSite(runner, sock)
                await inherited.start()
                self.addresses.append(inherited.name)
            return
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"admin.http: cannot listen on {self._config.http}: {exc.strerror or exc}") from exc
        self.addresses.append(site.name)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
