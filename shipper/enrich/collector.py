"""Prometheus view of enrichment and redaction: plain counters read at scrape time, like the rest of metrics.py.

Register it in the daemon's registry: `metrics.registry.register(EnrichCollector(enricher.counters,
redactor.counters))`. Not responsible for counting (usage.py, cost.py, redact.py own their ints).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from shipper.enrich.redact import RedactCounters
from shipper.enrich.usage import EnrichCounters


class EnrichCollector(Collector):
    def __init__(self, enrich: EnrichCounters, redact: RedactCounters) -> None:
        self._enrich = enrich
        self._redact = redact

    def collect(self) -> Iterable[Metric]:
        enrich, redact = self._enrich, self._redact
        yield CounterMetricFamily(
            "shipper_usage_estimated",
            "Vendor records whose missing token usage shipper counted",
            enrich.usage_estimated,
        )
        yield CounterMetricFamily(
            "shipper_cost_estimated", "Vendor records whose missing cost shipper priced", enrich.cost_estimated
        )
        yield CounterMetricFamily(
            "shipper_cost_unknown_model",
            "Records left without a cost because the price table does not know their model",
            enrich.price.unknown_model,
        )
        yield CounterMetricFamily(
            "shipper_enrich_failed", "Records forwarded as they came because enrichment failed", enrich.failed
        )
        yield CounterMetricFamily(
            "shipper_records_redacted", "Records changed by redaction before they were spooled", redact.records
        )
        rules = CounterMetricFamily(
            "shipper_redaction_rule_hits", "Records each redaction rule changed", labels=["rule"]
        )
        for rule, count in sorted(redact.rules.items()):
            rules.add_metric([rule], count)
        yield rules
