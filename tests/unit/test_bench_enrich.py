"""bench/enrich.py still runs: a few records through each measured case, every figure a positive number."""

from __future__ import annotations

from bench import enrich


def test_the_enrichment_benchmark_measures_every_case() -> None:
    results = {**enrich.redaction(count=20, rounds=1), **enrich.enrichment(count=20, rounds=1)}
    assert set(enrich.LABELS) <= set(results)
    assert all(value > 0 for value in results.values())
    assert "µs" in enrich.render({**results, "record_bytes": 1024.0})
