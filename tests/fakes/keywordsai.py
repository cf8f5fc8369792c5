"""Keywords AI as an upstream (`https://api.keywordsai.co`), strict to its *documented* REST API.

Accepts only `POST /api/request-logs/create/` (trailing slash, as documented) and answers 200
`{"message": "log successful"}`; the SDK's own path `/request-logs/create` is 404 here, so a test passes only if
shipper forwards to the documented path. Reads: `GET /api/request-logs/list` and `GET /api/request-logs/{id}`.
Update (docs only, not in the SDK): `PATCH /api/request-logs/{unique_id}/`; for a log never created it is 404
and a violation. A log's `unique_id` is the body's `unique_id` when given, else minted.
Keywords AI has no idempotency key: a redelivered create is a second log; `duplicates` counts creates whose body
equals an earlier one.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tests.fakes.base import FakeVendor, Reply, Seen, bearer, error, is_object

ID = r"[^/]+"
UPDATE_KEYS = frozenset({"metadata", "note", "positive_feedback", "custom_identifier"})


class KeywordsAIFake(FakeVendor):
    vendor = "keywordsai"
    base_path = ""

    def __init__(self, api_keys: tuple[str, ...] = ("kw-test-key-123",), port: int | None = None) -> None:
        super().__init__(api_keys, port)
        self.logs: dict[str, dict[str, Any]] = {}  # unique_id -> stored log
        self._bodies: set[bytes] = set()
        self.route("POST", r"/api/request-logs/create/", self.create_log)
        self.route("GET", r"/api/request-logs/list", self.list_logs)
        self.route("GET", rf"/api/request-logs/(?P<id>{ID})", self.get_log)
        self.route("PATCH", rf"/api/request-logs/(?P<id>{ID})/", self.update_log)

    def key_from(self, headers: Any) -> str | None:
        return bearer(headers)

    def by_custom_identifier(self, value: str) -> list[dict[str, Any]]:
        return [log for log in self.logs.values() if log.get("custom_identifier") == value]

    def create_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body):
            return error(400, "body must be a JSON object")
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        if canonical in self._bodies:
            self.duplicates += 1
        self._bodies.add(canonical)
        unique_id = body.get("unique_id") or uuid.uuid4().hex
        if not isinstance(unique_id, str):
            return error(400, "unique_id must be a string")
        self.logs[unique_id] = {**body, "id": unique_id, "unique_id": unique_id}
        self.event(seen, "log.create", unique_id)
        return Reply(200, {"message": "log successful"})

    def list_logs(self, seen: Seen, p: dict[str, str]) -> Reply:
        try:
            page = int(seen.query.get("page", "1"))
            size = int(seen.query.get("page_size", "20"))
        except ValueError:
            return error(400, "page and page_size must be integers")
        if page < 1 or size < 1:
            return error(400, "page and page_size must be positive")
        logs = list(self.logs.values())
        results = logs[(page - 1) * size : page * size]
        following = f"/api/request-logs/list?page={page + 1}&page_size={size}" if page * size < len(logs) else None
        return Reply(200, {"results": results, "count": len(logs), "next": following, "previous": None})

    def get_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        log = self.logs.get(p["id"])
        if log is None:
            return error(404, f"log {p['id']} not found")
        return Reply(200, log)

    def update_log(self, seen: Seen, p: dict[str, str]) -> Reply:
        body = seen.body
        if not is_object(body) or not body or not set(body) <= UPDATE_KEYS:
            return error(400, f"update keys must be among {sorted(UPDATE_KEYS)}")
        log = self.logs.get(p["id"])
        if log is None:
            self.violate(seen, f"log {p['id']} was never created")
            return error(404, f"log {p['id']} not found")
        log.update(body)
        self.event(seen, "log.update", p["id"])
        return Reply(200, log)
