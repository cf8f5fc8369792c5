"""The SQLite spool: durable queue (store), layout (schema), group commit (group, settle, sql) and read-only views."""

from shipper.spool.store import Spool

__all__ = ["Spool"]
