"""When to lease and how much, table by table: replay mode leases ahead for every slot, batch mode waits for a full
batch, its timeout or a backlog; a 413 halves the batch limits."""

from __future__ import annotations

import pytest

from shipper.core.leasing import (
    IDLE_POLL,
    LEASE_AHEAD,
    SETTLING_ROUNDS,
    Announced,
    Hold,
    Limits,
    Mode,
    batch_hold,
    free_slots,
    idle_wait,
    lease_limit,
    wakes,
)


@pytest.mark.parametrize(("max_records", "mode"), [(1, Mode.REPLAY), (2, Mode.BATCH), (1000, Mode.BATCH)])
def test_one_record_per_request_is_replay_mode_more_is_batch_mode(max_records: int, mode: Mode) -> None:
    assert Mode.of(max_records) is mode


@pytest.mark.parametrize(
    ("mode", "slots", "batch", "limit"),
    [
        (Mode.REPLAY, 1, 1, LEASE_AHEAD),  # a failing sink probes with one slot
        (Mode.REPLAY, 16, 1, 16 * LEASE_AHEAD),
        (Mode.BATCH, 1, 500, 500),
        (Mode.BATCH, 16, 500, 500),  # one batch per lease, however many slots the sink has
    ],
)
def test_replay_leases_ahead_for_every_slot_batch_leases_one_batch(
    mode: Mode, slots: int, batch: int, limit: int
) -> None:
    assert lease_limit(mode, slots, batch) == limit


@pytest.mark.parametrize(
    ("mode", "before", "added", "batch", "wake"),
    [
        (Mode.REPLAY, Announced(3, 1.0), 1, 1, True),  # every row counts in replay mode
        (Mode.BATCH, Announced(), 1, 100, True),  # a batch's first row starts its timeout
        (Mode.BATCH, Announced(5, 1.0), 1, 100, False),  # nothing changes until the batch can be full
        (Mode.BATCH, Announced(98, 1.0), 2, 100, True),  # now it can
        (Mode.BATCH, Announced(98, 1.0), 10, 100, True),
    ],
)
def test_an_append_wakes_the_loop_only_when_it_changes_the_plan(
    mode: Mode, before: Announced, added: int, batch: int, wake: bool
) -> None:
    assert wakes(mode, before, before.add(added, 9.0), batch) is wake


def test_announced_appends_keep_the_time_of_the_first() -> None:
    assert Announced().add(2, 5.0).add(3, 8.0) == Announced(5, 5.0)


@pytest.mark.parametrize(
    ("announced", "backlog", "stopping", "now", "hold"),
    [
        (Announced(), True, False, 0.0, None),  # rows may wait unannounced (start, after a send): look
        (Announced(), False, True, 0.0, None),  # stopping: no more holding
        (Announced(100, 10.0), False, False, 10.0, None),  # a full batch goes at once
        (Announced(), False, False, 50.0, Hold(IDLE_POLL, quiet=True)),  # nothing announced: look now and then
        (Announced(3, 10.0), False, False, 10.5, Hold(1.5)),  # a partial batch waits out batch_timeout...
        (Announced(3, 10.0), False, False, 12.0, None),  # ...and goes when it is up
        (Announced(3, 10.0), False, False, 13.0, None),
    ],
)
def test_a_partial_batch_goes_only_when_its_time_is_up_or_rows_may_be_waiting(
    announced: Announced, backlog: bool, stopping: bool, now: float, hold: Hold | None
) -> None:
    assert batch_hold(announced, backlog, stopping, batch_records=100, batch_timeout=2.0, now=now) == hold


@pytest.mark.parametrize(
    ("next_due", "now", "wait"),
    [(None, 5.0, IDLE_POLL), (5.25, 5.0, 0.25), (4.0, 5.0, 0.0), (500.0, 5.0, IDLE_POLL)],
)
def test_after_an_empty_lease_wait_for_the_first_due_row_but_look_again_within_the_idle_poll(
    next_due: float | None, now: float, wait: float
) -> None:
    assert idle_wait(next_due, now) == wait


@pytest.mark.parametrize(
    ("limits", "refused", "size", "after"),
    [
        (Limits(1000, 1 << 20), 1000, 800_000, Limits(500, 400_000)),
        (Limits(100, 1 << 20), 1000, 8_000_000, Limits(100, 1 << 20)),  # never grows
        (Limits(1000, 1 << 20), 2, 3, Limits(1, 1)),  # never below one
        (Limits(1000, 1 << 20), 3, 1, Limits(1, 1)),
    ],
)
def test_a_413_halves_the_batch_limits_to_the_refused_batch(
    limits: Limits, refused: int, size: int, after: Limits
) -> None:
    assert limits.shrunk(refused, size) == after


@pytest.mark.parametrize(
    ("limit", "sending", "in_flight", "free"),
    [
        (16, 0, 0, 16),  # idle: every slot
        (16, 16, 16, 0),  # every slot sending
        (16, 4, 20, 12),  # answered sends settle without holding a slot
        (16, 0, (1 + SETTLING_ROUNDS) * 16, 0),  # settling is bounded too: a crash repeats at most this many
        (16, 2, (1 + SETTLING_ROUNDS) * 16 - 3, 3),  # the tighter bound wins
        (1, 0, 0, 1),  # a probing sink: one at a time
    ],
)
def test_a_slot_frees_at_the_answer_and_sends_settling_are_bounded(
    limit: int, sending: int, in_flight: int, free: int
) -> None:
    assert free_slots(limit, sending, in_flight) == free
