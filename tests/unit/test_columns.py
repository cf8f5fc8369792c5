"""The spool's columns are named once (spool/sql.py): the values that cross its boundary agree with them."""

from __future__ import annotations

import dataclasses

from shipper.core.rows import SpoolRow
from shipper.records import NewRow
from shipper.spool import sql
from shipper.spool.reader import DeadRow


def test_a_leased_row_is_built_from_the_row_columns_in_their_order() -> None:
    assert SpoolRow._fields[: len(sql.ROW)] == sql.ROW


def test_a_row_is_the_request_plus_what_the_queue_adds() -> None:
    assert set(sql.ROW) == {*sql.REQUEST, "id", "created_at", "attempts"}


def test_a_new_row_carries_every_request_column_but_the_stored_credentials_number() -> None:
    stored = {"credential_id": "credential"}
    assert {stored.get(c, c) for c in sql.REQUEST} <= set(NewRow._fields)


def test_a_dead_letter_shows_row_and_outcome_columns_only() -> None:
    assert {f.name for f in dataclasses.fields(DeadRow)} <= {*sql.ROW, *sql.OUTCOME}


def test_a_waiting_row_is_read_into_every_field_of_a_spool_row() -> None:
    assert SpoolRow._fields == sql.SPOOL_ROW


def test_a_requeued_row_is_given_its_request_and_when_it_was_acknowledged_only() -> None:
    assert (*sql.REQUEST, "created_at") == sql.REQUEUED
    assert set(sql.DEAD_LETTER) == {*sql.ROW, *sql.OUTCOME}
