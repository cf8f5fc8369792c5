"""The ordering rule, once, as pure functions over plain values: which waiting rows may leave now, and which die with
a dead create.

Every queue implements exactly this: the SQLite spool in SQL (spool/sql.py LEASE, spool/group.py, spool/settle.py),
the in-memory queue by calling these functions. A property test (tests/integration/test_order_model.py) drives random
histories through both and holds them to the same choices. The rule, for the rows of one sink in acknowledgement
(id) order:

- **Same key, one at a time.** A row with a key waits while any older row with that key is still queued (leased,
  backing off or waiting): an entity's calls reach the remote in the order they were acknowledged.
- **After.** A row naming `after` waits while any older row has that key (an update waits for its create) or that
  scope (session metadata waits for every row of the session).
- **Scope inheritance.** An update with a key but no scope joins the scope its entity's create named, so it counts
  as part of that session.
- **Dead create, dead dependants.** When a create with a key is dead-lettered, every younger row of the sink with
  that key or naming it as `after` is dead-lettered with it (transitively); a row appended after its create died is
  dead-lettered on arrival. Such a row could never succeed, and holding it would block its key for ever.

Not responsible for timing (due, leased) beyond the `free` predicate the caller passes, nor for storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Waiting:
    """What the rule needs to know of a queued row."""

    id: int
    key: str | None
    scope: str | None
    after: str | None
    kind: str | None = None


def eligible(rows: Iterable[Waiting], free: Callable[[Waiting], bool]) -> Iterator[Waiting]:
    """The rows that may leave now, in id order. `rows` is every queued row of one sink in id order; `free` says
    whether a row is due and not leased (such a row still blocks its younger kin when it is not free)."""
    keys: set[str] = set()
    scopes: set[str] = set()
    for row in rows:
        blocked = (row.key is not None and row.key in keys) or (
            row.after is not None and (row.after in keys or row.after in scopes)
        )
        if not blocked and free(row):
            yield row
        if row.key is not None:
            keys.add(row.key)
        if row.scope is not None:
            scopes.add(row.scope)


def inherited_scope(kind: str | None, key: str | None, scope: str | None, entity_scope: str | None) -> str | None:
    """The scope a new row is stored with: an update of a keyed entity joins its create's scope."""
    if kind == "update" and key is not None and scope is None:
        return entity_scope
    return scope


def remembers_scope(kind: str | None, key: str | None, scope: str | None) -> bool:
    """Whether a new row teaches its entity's scope (the first create of a key does; later ones do not replace it)."""
    return kind == "create" and key is not None and scope is not None


def dead_on_arrival(
    kind: str | None, key: str | None, after: str | None, dead_creates: Mapping[str, int]
) -> int | None:
    """The id of the dead-lettered create a new row depends on (its own key, for an update; its `after`), oldest
    first; None when it can be queued. `dead_creates` maps a key to the oldest dead create's id for that key."""
    own = key if kind == "update" else None
    found = [dead_creates[name] for name in (own, after) if name is not None and name in dead_creates]
    return min(found) if found else None


def dependants(create: Waiting, queued: Iterable[Waiting]) -> Iterator[Waiting]:
    """The queued rows that die with a dead create: younger, with its key or naming it as `after`."""
    if create.kind != "create" or create.key is None:
        return
    for row in queued:
        if row.id > create.id and (row.key == create.key or row.after == create.key):
            yield row


def reason(create_id: int, key: str | None) -> str:
    """The dead-letter reason of a row that died with (or after) its create."""
    return f"depends on row {create_id} ({key}), which was dead-lettered"
