"""Which partition of a stream a row goes to, as pure functions: everything the ordering rule (order.py) ties
together lands in one partition, so a consumer that keeps order within a partition keeps it for the whole fleet.

The rule ties rows by key (one at a time), by `after` (an update after its create, a child log after its parent,
session metadata after the session's rows) and by scope (a session's rows). A row's **ordering group** is therefore
the group of what it is tied to, found in this order:

1. the group its key already belongs to (an update, or a Humanloop log's later PATCH, goes where its create went);
2. its scope (a session's rows, and an update that inherited its create's scope);
3. the group of the key or scope it waits `after` (a child log joins its parent's trace, however deep);
4. its own key (a first create that names nothing else);
5. none: a row the rule leaves free goes to any partition (spread by its id).

A keyed row teaches its key's group to the rows after it (`teaches`); the caller keeps what was taught
(sinks/jetstream/state.py), as the spool keeps an entity's scope. A group is a name; a partition is a stable hash of
it (crc32, the same in every process and on every host), never Python's `hash`, which changes per process.
Not responsible for remembering groups or for subjects (the sink).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping


def ordering_group(key: str | None, scope: str | None, after: str | None, known: Mapping[str, str]) -> str | None:
    """The group a row belongs to (see the module's rule); `known` maps a key (or scope) to the group it was taught."""
    if key is not None and key in known:
        return known[key]
    if scope is not None:
        return scope
    if after is not None:
        return known.get(after, after)
    return key


def teaches(key: str | None, group: str | None) -> tuple[str, str] | None:
    """What a row teaches the rows after it: its key belongs to its group (the first row of a key wins)."""
    if key is None or group is None:
        return None
    return key, group


def partition_of(group: str | None, partitions: int, row_id: int) -> int:
    """The partition of a group; a row with no group spreads by its id."""
    if group is None:
        return row_id % partitions
    return zlib.crc32(group.encode()) % partitions
