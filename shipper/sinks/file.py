"""`type = "file"`: append each record as one JSON line, fsynced before the rows count as delivered.

The line carries the whole record (id, key, method, path, query, body) so a file sink loses nothing a remote would
have received; the id lets a reader drop the rare duplicate after a crash. Not responsible for rotation.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import orjson

from shipper.config.sinks import FileSinkConfig
from shipper.core.retry import Outcome, Verdict
from shipper.core.rows import SpoolRow
from shipper.sinks.base import Batching


def render_lines(row: SpoolRow) -> bytes:
    """One line per record: a bundle's records (sinks/bundling.py) each get their own line and their own id."""
    query = orjson.Fragment(row.query) if row.query else None
    bodies = row.body.split(b"\n") if row.records > 1 else (row.body,)
    return b"".join(
        orjson.dumps(
            {
                "id": row.id + i,
                "sink": row.sink,
                "key": row.key,
                "method": row.method,
                "path": row.path,
                "query": query,
                "body": orjson.Fragment(body),
                "created_at": row.created_at,
            }
        )
        + b"\n"
        for i, body in enumerate(bodies)
    )


class FileSink:
    def __init__(self, name: str, config: FileSinkConfig) -> None:
        self.name = name
        self.batching = Batching(max_records=config.batch_max_records, bundles=True)
        self.concurrency = 1
        self._path = config.path
        self._fsync = config.fsync
        self._fd: int | None = None

    async def start(self) -> None:
        if self._fd is not None:  # started already (a reload starts a sink before the fleet takes it)
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def send(self, rows: Sequence[SpoolRow]) -> Outcome:
        data = b"".join(render_lines(row) for row in rows)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            return Outcome(Verdict.RETRY, None, f"cannot write {self._path}: {exc.strerror}")
        return Outcome(Verdict.DELIVERED)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError(9, "sink is not started")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self._fsync:
            os.fsync(self._fd)
