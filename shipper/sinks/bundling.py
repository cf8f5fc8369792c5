"""Bundles: one spool row for a run of a request's records that no ordering needs apart, for a sink that batches.

The batch path was bound by the one SQLite writer doing a B-tree insert (and its index entries), a lease and a
delete per record. A batching sink sends many records in one request anyway, so a run of keyless records bound for
it, from one acknowledged request, is stored as one row (schema 8), their bodies joined by newlines: the writer's
work is per bundle, not per record, and the sink joins bundles as it joins rows (NDJSON). Only records the ordering
rule never looks at are bundled: no key, scope, `after` or kind (core/order.py gives them no order to keep), no API
key, and one method, path and query per bundle, so a bundle split back into its records (spool/bundles.py) gives
each record what it was sent with. A bundle is never larger than one of the sink's batches.
Not responsible for splitting bundles (the spool does, when a lease or a refusal needs it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shipper.config import SinkConfig
from shipper.config.sinks import FileSinkConfig, HttpSinkConfig, JetStreamSinkConfig
from shipper.records import NewRow

# A bundle travelling as one NATS message stays under this: a quarter of the servers' default max_payload.
MAX_MESSAGE_BUNDLE_BYTES = 256 << 10
# A bundle for a sink with no byte limit of its own (the file sink) stays under this.
MAX_BUNDLE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class BundleLimit:
    """At most this many records and about this many bytes in one bundle: one of the sink's batches."""

    records: int
    bytes: int


def bundle_limits(sinks: Mapping[str, SinkConfig]) -> dict[str, BundleLimit]:
    """The sinks whose rows may be bundles: a file sink, an HTTP sink in batch mode (their sends join records by
    newlines), and a jetstream sink with bundle_max_records (a bundle is one message). Vendor sinks send one record
    per request and order them; replay-mode HTTP sinks replay each one."""
    limits: dict[str, BundleLimit] = {}
    for name, sink in sinks.items():
        if isinstance(sink, FileSinkConfig) and sink.batch_max_records > 1:
            limits[name] = BundleLimit(sink.batch_max_records, MAX_BUNDLE_BYTES)
        elif isinstance(sink, HttpSinkConfig) and sink.batch and sink.batch_max_records > 1:
            limits[name] = BundleLimit(sink.batch_max_records, min(sink.batch_max_bytes, MAX_BUNDLE_BYTES))
        elif isinstance(sink, JetStreamSinkConfig) and sink.bundle_max_records > 1:
            limits[name] = BundleLimit(sink.bundle_max_records, MAX_MESSAGE_BUNDLE_BYTES)
    return limits


def loose(row: NewRow) -> bool:
    """Whether the ordering rule leaves this record free of every other (and it carries nothing stored apart)."""
    return (
        row.key is None
        and row.scope is None
        and row.after is None
        and row.kind is None
        and row.credential is None
        and row.records == 1
        and b"\n" not in row.body
    )


def bundled(rows: Sequence[NewRow], limits: Mapping[str, BundleLimit]) -> list[NewRow]:
    """`rows` with each run of loose records for one bundling sink (same method, path and query) as one bundle, in
    the order given, so the records' ids stay in request order."""
    out: list[NewRow] = []
    run: list[NewRow] = []
    size = 0
    for row in rows:
        limit = limits.get(row.sink)
        if run and (
            limit is None
            or not loose(row)
            or (row.sink, row.method, row.path, row.query) != (run[0].sink, run[0].method, run[0].path, run[0].query)
            or len(run) >= limit.records
            or size + len(row.body) + 1 > limit.bytes
        ):
            out.append(_bundle(run))
            run, size = [], 0
        if limit is None or not loose(row):
            out.append(row)
            continue
        run.append(row)
        size += len(row.body) + 1
    if run:
        out.append(_bundle(run))
    return out


def _bundle(run: list[NewRow]) -> NewRow:
    if len(run) == 1:
        return run[0]
    return run[0]._replace(body=b"\n".join(row.body for row in run), records=len(run))
