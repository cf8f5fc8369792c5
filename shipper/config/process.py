"""`[daemon]` and `[spool]`: how the daemon process runs and stops, and where it keeps what it has acknowledged.

Apart from the listeners and the sinks because these keys shape the process itself (logging, drain deadline, the
spool's file, durability and bounds, how many ingest and delivery processes share it), not any one path a record
takes. Not responsible for opening the spool (shipper/spool/) or for the processes and lifecycle they tune
(shipper/supervisor.py, shipper/daemon.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from shipper.config.section import Section

# "auto" starts at most this many processes of a role: past it, the one spool's writer is the limit.
AUTO_MAX = 4
# How many processes of a role: a count (at most 64), or "auto".
Workers = Annotated[int, Field(ge=0, le=64)] | Literal["auto"]


class DaemonConfig(Section):
    # Long enough for a normal in-flight request to finish, short enough for systemd's stop timeout.
    drain_timeout: float = Field(10.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Processes beside one spool (supervisor.py): 0 and 0 is one process doing both; "auto" sizes to the cores.
    ingest_workers: Workers = "auto"
    delivery_workers: Workers = "auto"

    @model_validator(mode="after")
    def _both_or_neither(self) -> DaemonConfig:
        if (self.ingest_workers == 0) != (self.delivery_workers == 0):
            raise ValueError("ingest_workers and delivery_workers are both 0 (one process) or both at least 1")
        return self

    def workers(self, cores: int) -> tuple[int, int]:
        """(ingest, delivery) processes; (0, 0) means one process doing both. `auto`: half the usable cores each
        (cores.py), at least 1 and at most AUTO_MAX."""
        half = min(AUTO_MAX, max(1, cores // 2))
        ingest = half if self.ingest_workers == "auto" else self.ingest_workers
        delivery = min(AUTO_MAX, max(1, cores - half)) if self.delivery_workers == "auto" else self.delivery_workers
        return ingest, delivery


class SpoolConfig(Section):
    path: Path = Path("var/spool.db")
    # fsync: synchronous=FULL, an ack survives power loss. os: synchronous=NORMAL, an ack survives a process crash.
    durability: Literal["fsync", "os"] = "fsync"
    # A leased row comes back to the queue after this long if its sender vanished; above any sink timeout.
    lease_timeout: float = Field(300.0, gt=0)
    # Bounds on what the spool may hold (None: no bound but the disk). Bytes are live pages plus the WAL.
    max_bytes: int | None = Field(None, gt=0)
    max_rows: int | None = Field(None, gt=0)
    # reject: ingest answers 503 + Retry-After and nothing acknowledged is dropped. drop_oldest: make room.
    when_full: Literal["reject", "drop_oldest"] = "reject"
