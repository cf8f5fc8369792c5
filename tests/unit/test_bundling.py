"""Which records share a row (sinks/bundling.py): loose records of one request, for a sink that batches, in runs
no longer than one of its batches; everything the ordering rule looks at, or that is stored apart, stays a row of
its own. And how much of the eligible rows one lease takes (core/leasing.take), bundles counted as their records."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.config import Config
from shipper.core.leasing import take
from shipper.core.rows import SpoolRow
from shipper.records import NewRow
from shipper.sinks.bundling import (
    MAX_BUNDLE_BYTES,
    MAX_MESSAGE_BUNDLE_BYTES,
    BundleLimit,
    bundle_limits,
    bundled,
    loose,
)

LIMITS = {"batch": BundleLimit(3, 1000)}


def row(n: int, sink: str = "batch", **fields: Any) -> NewRow:
    method, path, key = fields.pop("method", "POST"), fields.pop("path", ""), fields.pop("key", None)
    return NewRow(sink, method, path, None, orjson.dumps({"n": n}), key, **fields)


def shape(rows: list[NewRow]) -> list[tuple[str, int, list[int]]]:
    return [(r.sink, r.records, [orjson.loads(line)["n"] for line in r.body.split(b"\n")]) for r in rows]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([row(1), row(2)], [("batch", 2, [1, 2])]),
        ([row(1)], [("batch", 1, [1])]),  # one record is a plain row
        ([row(n) for n in range(5)], [("batch", 3, [0, 1, 2]), ("batch", 2, [3, 4])]),  # at most one batch each
        ([row(1), row(2, "replay"), row(3)], [("batch", 1, [1]), ("replay", 1, [2]), ("batch", 1, [3])]),
        ([row(1), row(2, key="k"), row(3), row(4)], [("batch", 1, [1]), ("batch", 1, [2]), ("batch", 2, [3, 4])]),
        ([row(1), row(2, path="/other"), row(3, path="/other")], [("batch", 1, [1]), ("batch", 2, [2, 3])]),
        ([row(1, after="s"), row(2, scope="s"), row(3, kind="create")], [("batch", 1, [n]) for n in (1, 2, 3)]),
        ([row(1, credential="secret"), row(2, credential="secret")], [("batch", 1, [1]), ("batch", 1, [2])]),
    ],
)
def test_runs_of_loose_records_for_one_batching_sink_become_bundles(rows: list[NewRow], expected: list[Any]) -> None:
    assert shape(bundled(rows, LIMITS)) == expected


def test_a_bundle_stays_within_the_sink_batch_bytes() -> None:
    rows = [row(n) for n in range(3)]  # each body is 7 bytes, 8 with its newline
    assert [r.records for r in bundled(rows, {"batch": BundleLimit(10, 16)})] == [2, 1]


def test_a_body_with_a_newline_is_never_bundled_and_loose_names_what_the_rule_looks_at() -> None:
    lined = NewRow("batch", "POST", "", None, b'"a\nb"', None)
    assert not loose(lined) and loose(row(1))
    assert [r.records for r in bundled([row(1), lined, row(2)], LIMITS)] == [1, 1, 1]


@given(st.lists(st.tuples(st.sampled_from(["batch", "replay"]), st.sampled_from([None, "k"])), max_size=30))
def test_bundling_keeps_every_record_in_order_under_the_ids_it_would_have_had(specs: list[Any]) -> None:
    rows = [row(n, sink, key=key) for n, (sink, key) in enumerate(specs)]
    out = bundled(rows, LIMITS)
    assert [n for _, _, numbers in shape(out) for n in numbers] == list(range(len(rows)))
    assert sum(r.records for r in out) == len(rows)
    assert all(r.records <= 3 and (r.records == 1 or (r.sink == "batch" and r.key is None)) for r in out)


def test_only_file_sinks_http_sinks_in_batch_mode_and_jetstream_sinks_that_ask_take_bundles() -> None:
    stream = {"type": "jetstream", "servers": ["nats://127.0.0.1:4222"], "stream": "ROWS", "target": "t"}
    config = Config.model_validate(
        {
            "sinks": {
                "file": {"type": "file", "path": "/tmp/x.ndjson"},
                "batch": {"type": "http", "base_url": "http://127.0.0.1:1", "batch": True, "batch_max_bytes": 4096},
                "replay": {"type": "http", "base_url": "http://127.0.0.1:1"},
                "one": {"type": "file", "path": "/tmp/y.ndjson", "batch_max_records": 1},
                "fp": {"type": "freeplay", "base_url": "http://127.0.0.1:1/api"},
                "fleet": {**stream, "bundle_max_records": 100},
                "single": stream,  # a message per record, unless asked
            }
        }
    )
    assert bundle_limits(config.sinks) == {
        "file": BundleLimit(1000, MAX_BUNDLE_BYTES),
        "batch": BundleLimit(1000, 4096),
        "fleet": BundleLimit(100, MAX_MESSAGE_BUNDLE_BYTES),
    }


def spooled(n: int, records: int = 1, size: int = 10) -> SpoolRow:
    return SpoolRow(n, "s", None, "POST", "", None, b"x" * size, 0.0, 1, records=records)


@pytest.mark.parametrize(
    ("rows", "limit", "max_bytes", "bundles", "taken", "split"),
    [
        ([spooled(1, 3), spooled(4, 3)], 6, 100, True, [1, 4], []),  # bundles count as their records
        ([spooled(1, 3), spooled(4, 3)], 5, 100, True, [1], []),  # the second would pass the limit
        ([spooled(1, 3), spooled(4)], 2, 100, True, [4], [1]),  # larger than the batch: split first
        ([spooled(1, 3), spooled(4)], 10, 5, True, [4], [1]),  # more bytes than the batch: split first
        ([spooled(1, 3), spooled(4)], 4, 100, False, [4], [1]),  # a sender that takes no bundles
        ([spooled(1, size=50), spooled(2, size=50)], 4, 60, False, [1], []),  # one row always goes, bytes or not
    ],
)
def test_take_counts_records_and_names_the_bundles_to_split(
    rows: list[SpoolRow], limit: int, max_bytes: int, bundles: bool, taken: list[int], split: list[int]
) -> None:
    got, too_big = take(iter(rows), limit, max_bytes, bundles)
    assert ([r.id for r in got], too_big) == (taken, split)
