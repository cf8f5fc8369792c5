"""What a sidecar keeps beside its spool for a jetstream sink (sinks/jetstream/state.py): one id for every process
and restart, and each key's ordering group on disk before it is published, forgotten after its retention."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from shipper.core.rows import SpoolRow
from shipper.sinks.jetstream.state import RETENTION, SidecarState, state_path


def spool_row(n: int, key: str | None, after: str | None = None) -> SpoolRow:
    return SpoolRow(n, "fleet", key, "POST", "/log", None, b"{}", 0.0, 0, after=after)


async def test_every_opening_of_one_spool_shares_one_sidecar_id(tmp_path: Path) -> None:
    path = state_path(tmp_path / "spool.db")
    assert path == tmp_path / "spool.db.jetstream"
    first, second = SidecarState(path, "fleet"), SidecarState(path, "fleet")
    await first.open()
    await second.open()
    try:
        assert first.sidecar == second.sidecar and len(first.sidecar) == 16
    finally:
        await first.close()
        await second.close()
    other = SidecarState(state_path(tmp_path / "other.db"), "fleet")
    await other.open()
    await other.close()
    assert other.sidecar != first.sidecar


async def test_a_group_taught_by_one_process_is_found_by_another_until_its_retention(tmp_path: Path) -> None:
    path = state_path(tmp_path / "spool.db")
    teacher, learner = SidecarState(path, "fleet"), SidecarState(path, "fleet")
    await teacher.open()
    await learner.open()
    try:
        assert await teacher.groups([spool_row(1, "root"), spool_row(2, None)]) == ["root", None]
        assert await teacher.groups([spool_row(3, "child", after="root")]) == ["root"]
        assert await learner.groups([spool_row(4, "child")]) == ["root"]  # read from the file, not a cache
    finally:
        await teacher.close()
        await learner.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE groups SET created_at = ? WHERE key = 'child'", (time.time() - RETENTION - 1,))
    later = SidecarState(path, "fleet")
    await later.open()  # forgets what is past its retention, as the spool forgets an entity's scope
    try:
        # An update that old no longer finds its trace: it goes to its own key's group (README: Scaling out).
        assert await later.groups([spool_row(5, "root"), spool_row(6, "child")]) == ["root", "child"]
    finally:
        await later.close()
