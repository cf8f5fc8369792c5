"""The SQLite spool: durable queue (store), layout (schema), boundary values (rows) and read-only views (stats)."""

from shipper.spool.rows import DeadLetter, Lease, Retry, Settlement, SpoolRow
from shipper.spool.store import Spool

__all__ = ["DeadLetter", "Lease", "Retry", "Settlement", "Spool", "SpoolRow"]
