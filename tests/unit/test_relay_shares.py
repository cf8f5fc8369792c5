"""A relay's fair share of the partitions (queue/jetstream/shares.py): from any start, relays that each follow the
plan in turn end with every partition held by exactly one of them, none holding more than ceil(P / M); a relay
never takes a partition another holds; the excess goes back highest first."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from shipper.queue.jetstream.shares import Plan, plan, share


def test_share_is_the_ceiling() -> None:
    assert [share(16, m) for m in (1, 2, 3, 5, 16, 17)] == [16, 8, 6, 4, 1, 1]


def test_a_relay_above_its_share_gives_back_its_highest_partitions() -> None:
    owners = dict.fromkeys(range(8), "a")
    assert plan("a", ["a", "b"], owners, 8) == Plan([], [4, 5, 6, 7])


def test_a_relay_takes_only_free_partitions_up_to_its_share() -> None:
    owners = {0: "a", 1: "a", 2: "dead"}  # a lease of a relay that looks dead is not free until it expires
    assert plan("b", ["a", "b"], owners, 4) == Plan([3], [])


def settle(members: list[str], partitions: int, owners: dict[int, str], order: list[int]) -> dict[int, str]:
    """Members act in the given order, again and again, applying their plans, until nothing changes."""
    for _ in range(4 * partitions + 4):
        changed = False
        for index in order:
            me = members[index % len(members)]
            wanted = plan(me, members, owners, partitions)
            for p in wanted.give:
                del owners[p]
            for p in wanted.take:
                assert p not in owners  # never another's
                owners[p] = me
            changed |= bool(wanted.give or wanted.take)
        if not changed:
            return owners
    raise AssertionError("the plans never settled")


@given(
    st.integers(1, 64),
    st.integers(1, 9),
    st.dictionaries(st.integers(0, 63), st.integers(0, 12)),
    st.lists(st.integers(0, 20), min_size=1, max_size=12),
)
def test_from_any_start_every_partition_ends_held_once_within_the_share(
    partitions: int, count: int, start: dict[int, int], order: list[int]
) -> None:
    members = [f"relay-{i}" for i in range(count)]
    # Leases as found: some of live members, some of relays gone (their leases expire: dropped here).
    owners = {p: members[o] for p, o in start.items() if p < partitions and o < count}
    ended = settle(members, partitions, owners, [*order, *range(count)])
    assert sorted(ended) == list(range(partitions))
    cap = math.ceil(partitions / count)
    held = [sum(1 for owner in ended.values() if owner == m) for m in members]
    assert max(held) <= cap
