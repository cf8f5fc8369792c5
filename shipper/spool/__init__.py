"""The SQLite spool: durable queue (store), layout (schema) and read-only views (stats)."""

from shipper.spool.store import DeadLetter, Lease, Retry, Spool, SpoolRow

__all__ = ["DeadLetter", "Lease", "Retry", "Spool", "SpoolRow"]
