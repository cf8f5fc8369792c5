"""`shipper status`'s table fits a 100-column terminal whatever it holds: long sink names, big counts, every state,
long errors (on lines of their own, cut with an ellipsis) and the reasons a view is partial (wrapped)."""

from __future__ import annotations

from typing import Any

from shipper.status import WIDTH, render_table

NOW = 1_800_000_000.0


def sink(name: str, **fields: Any) -> dict[str, Any]:
    entry = {"sink": name, "queued": 0, "leased": 0, "retrying": 0, "dead_lettered": 0, "oldest_age": None}
    return {**entry, **fields}


def test_the_table_fits_100_columns_with_long_names_big_counts_long_errors_and_partial_reasons() -> None:
    error = "HTTP 401: " + '{"message": "invalid or missing api key", "detail": "' + "x" * 400 + '"}'
    view = {
        "daemon": {"running": True, "pid": 4242},
        "spool": {"path": "var/spool.db", "bytes": 3 * 1024 * 1024},
        "sinks": [
            sink("local", state="up", in_flight=0, delivered_per_minute=1200.0),
            sink(
                "freeplay-production-eu-west-and-then-some",
                queued=12_345_678,
                dead_lettered=98_765,
                oldest_age=86_400.0 * 3,
                state="auth_failed",
                in_flight=1,
                delivered_per_minute=0.0,
                retrying_since=NOW - 7200,
                last_error=error,
                last_error_at=NOW - 30,
            ),
            sink("remote", state="backing_off", in_flight=0, last_error="HTTP 503:\n upstream\tunavailable"),
        ],
        "partial": ["not run by the daemon, spool figures only: " + ", ".join(f"sink-{n}" for n in range(40))],
    }
    lines = render_table(view, now=NOW).splitlines()
    too_wide = [line for line in lines[:-1] if len(line) > WIDTH]  # the daemon line holds a path: not cut
    assert too_wide == [], too_wide
    header, *rows = lines
    assert header.split() == ["SINK", "QUEUED", "IN-FLIGHT", "DELIVERED/MIN", "STATE", "RETRYING", "DEAD", "OLDEST"]
    assert rows[1].startswith("freeplay-production…  12345678")
    assert "auth_failed" in rows[1] and "for 2.0h" in rows[1]
    # Errors are shown whatever the state (and whitespace in them folded), each on a line of its own.
    errors = [line for line in lines if line.startswith("last error")]
    assert errors[0].startswith("last error, freeplay-production-eu-west-and-then-some (30s ago): HTTP 401: ")
    assert errors[0].endswith("…") and len(errors[0]) == WIDTH
    assert errors[1] == "last error, remote: HTTP 503: upstream unavailable"
    partial = lines[lines.index(next(line for line in lines if line.startswith("partial view:"))) :]
    assert len(partial) > 1 and all(line.startswith("  ") for line in partial[1:])
    assert "sink-39" in " ".join(partial)


def test_a_sink_up_with_an_old_error_still_shows_it_and_a_spoolless_live_view_shows_question_marks() -> None:
    view = {
        "daemon": {"running": True, "pid": 1},
        "spool": {"path": "/elsewhere/spool.db", "bytes": None},
        "sinks": [
            {"sink": "kw", "state": "up", "in_flight": 0, "last_error": "HTTP 401: bad key", "last_error_at": NOW}
        ],
        "partial": ["no spool at /elsewhere/spool.db: live figures only, no queue depths"],
    }
    text = render_table(view, now=NOW)
    _, row, *rest = text.splitlines()
    assert row.split() == ["kw", "?", "0", "-", "up", "-", "?", "-"]
    assert "last error, kw (0s ago): HTTP 401: bad key" in rest
    assert "daemon: running (pid 1); spool /elsewhere/spool.db: size unknown" in rest
