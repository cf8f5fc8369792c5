"""bench/report.py's (d): peak RSS in total and per process, token counting on and off, from the vendor runs."""

from __future__ import annotations

from typing import Any

from bench import report


def vendor_run(by_process: dict[str, float]) -> dict[str, Any]:
    return {
        "records": 100,
        "received": 100,
        "complete": True,
        "peak_rss_mb": sum(by_process.values()),
        "peak_rss_mb_by_process": by_process,
    }


def test_d_is_the_vendor_runs_total_with_each_process_named_by_its_role() -> None:
    measured = {
        "ceiling": {},
        "scenarios": {
            "e.vendors": vendor_run({"delivery-12": 130.0, "ingest-13": 60.0, "supervisor": 41.0}),
            "e.vendors.tokens_off": vendor_run({"supervisor": 41.0, "ingest-23": 59.0, "delivery-22": 59.0}),
            "p.vendor_path": {"peak_rss_mb": 236.0},  # a vendor sink too: not one of the http-sink runs
        },
    }
    figures = {f["id"]: f for f in report.figures(measured)}
    assert set(figures) == {"d_rss_tokens_on", "d_rss_tokens_off"}
    on, off = figures["d_rss_tokens_on"], figures["d_rss_tokens_off"]
    assert (on["value"], on["target"]) == (231.0, report.RSS_TARGET_MB)
    assert on["verdict"] == "over by 16% (supervisor 41, ingest 60, delivery 130)"
    assert off["verdict"] == "pass (supervisor 41, ingest 59, delivery 59)"


def test_the_http_sink_figure_is_the_largest_of_the_http_runs_only() -> None:
    measured = {
        "ceiling": {},
        "scenarios": {
            "a.ingest.fsync.batch": {"peak_rss_mb": 150.0},
            "c.e2e.replay": {"peak_rss_mb": 162.0},
            "p.vendor_path": {"peak_rss_mb": 236.0},
        },
    }
    [http] = report.figures(measured)
    assert (http["id"], http["value"], http["verdict"]) == ("d_rss_http", 162.0, "pass")
