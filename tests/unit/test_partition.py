"""Which ordering group, and so which partition, a row goes to (core/partition.py): what the ordering rule ties
together shares a partition, through any depth of `after` and across an update that names only its key."""

from __future__ import annotations

import pytest

from shipper.core.partition import ordering_group, partition_of, teaches


@pytest.mark.parametrize(
    ("key", "scope", "after", "known", "group"),
    [
        (None, None, None, {}, None),  # free: any partition
        ("k", None, None, {}, "k"),  # a first create names only itself
        ("k", None, None, {"k": "g"}, "g"),  # an update goes where its create went
        ("k", "s", None, {"k": "g"}, "g"),  # a key's group wins over a scope it names later
        ("k", "s", None, {}, "s"),  # a session's row
        ("m", "s", "s", {}, "s"),  # session metadata after the session's rows
        ("d", None, "s", {}, "s"),  # a session's delete after its rows
        ("c", None, "p", {"p": "root"}, "root"),  # a child log joins its parent's trace
        ("c", None, "p", {}, "p"),  # a parent published before the memory was kept: its own key
    ],
)
def test_ordering_group(
    key: str | None, scope: str | None, after: str | None, known: dict[str, str], group: str | None
) -> None:
    assert ordering_group(key, scope, after, known) == group


def test_a_trace_of_any_depth_and_its_updates_share_one_group() -> None:
    known: dict[str, str] = {}
    rows = [("root", None), ("child", "root"), ("grandchild", "child"), ("child", None), ("grandchild", None)]
    groups = []
    for key, after in rows:
        group = ordering_group(key, None, after, known)
        lesson = teaches(key, group)
        assert lesson is not None
        known.setdefault(*lesson)
        groups.append(group)
    assert groups == ["root"] * 5


def test_a_row_without_a_key_teaches_nothing() -> None:
    assert teaches(None, "s") is None
    assert teaches("k", None) is None
    assert teaches("k", "g") == ("k", "g")


def test_partitions_are_stable_and_spread() -> None:
    assert partition_of("fp:s:1", 16, 1) == partition_of("fp:s:1", 16, 999)  # the group decides, not the row
    assert partition_of("fp:s:1", 16, 0) == 4  # crc32: the same in every process and on every host
    assert {partition_of(f"hl:log:{n}", 16, 0) for n in range(200)} == set(range(16))
    assert [partition_of(None, 4, n) for n in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
