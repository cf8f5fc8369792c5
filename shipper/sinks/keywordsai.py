"""Keywords AI: request-log creates (SDK `keywordsai` 1.0.4 and raw REST) and the documented metadata updates.

The SDK posts to `/request-logs/create` (it strips `/api` from its base URL); the documented endpoint is
`/api/request-logs/create/`, and that is where rows are forwarded. A create carries no id and its answer none
either, so creates are independent; an update names the server's `unique_id`, learnt by the app from a proxied read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from shipper.core.rows import SpoolRow
from shipper.sinks.vendor import (
    ID,
    ClientIds,
    Plan,
    Proxied,
    Route,
    Spooled,
    bearer,
    normalize_path,
    plan_routes,
    route,
)

LOGGED = {"message": "log successful"}


def _create(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
    return Spooled("POST", "/api/request-logs/create/", body, 200, LOGGED, kind="create")


def _update(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
    unique_id = m.group(1)
    return Spooled(
        "PATCH", f"/api/request-logs/{unique_id}/", body, 200, {"message": "log updated"},
        key=f"kw:{unique_id}", kind="update",
    )  # fmt: skip


def _batch_update(m: re.Match[str], query: Mapping[str, str], body: Any) -> Spooled:
    return Spooled("PATCH", "/api/request-logs/batch-update/", body, 200, {"message": "logs updated"}, kind="update")


ROUTES: Sequence[Route] = (
    route("POST", r"(?:/api)?/request-logs/create", _create),
    route("POST", r"/api/request-logs", _create),
    route("PATCH", r"/api/request-logs/batch-update", _batch_update),
    route("PATCH", rf"/api/request-logs/{ID}", _update),
)


class KeywordsAI(ClientIds):
    type = "keywordsai"
    auth_header = "Authorization"

    def plan(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Plan | None:
        collapsed = re.sub(r"/{2,}", "/", path)
        normal = normalize_path(path)
        if not normal.startswith(("/request-logs", "/api/request-logs")):
            return None
        planned = plan_routes(ROUTES, method, normal, query, body)
        if planned is not None:
            return planned
        return Proxied(collapsed if collapsed.startswith("/api/") else "/api" + collapsed)

    def key_from(self, headers: Mapping[str, str]) -> str | None:
        return bearer(headers)

    def auth_value(self, key: str) -> str:
        return f"Bearer {key}"

    def success(self, row: SpoolRow) -> frozenset[int] | None:
        return None
