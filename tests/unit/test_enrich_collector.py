"""The enrichment and redaction counters as Prometheus exports them."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from shipper.config.transform import EnrichConfig, RedactConfig
from shipper.enrich.collector import EnrichCollector
from shipper.enrich.redact import Redactor
from shipper.enrich.usage import Enricher

KW_PATH = "/api/request-logs/create/"


def test_the_counters_are_exported_with_bounded_labels() -> None:
    enricher = Enricher(EnrichConfig())
    redactor = Redactor(RedactConfig(builtin=("emails", "cards")))
    log = {"model": "gpt-4o-mini", "prompt_messages": [{"role": "user", "content": "hi"}], "completion_message": "yo"}
    enricher.apply("keywordsai", "POST", KW_PATH, orjson.dumps(log))
    enricher.apply("keywordsai", "POST", KW_PATH, orjson.dumps({**log, "model": "my-own-model"}))
    redactor.redact_body(b'{"a": "bob@example.com"}', None, "POST", "/x")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnrichCollector(enricher.counters, redactor.counters))
    text = generate_latest(registry).decode()
    for line in (
        "shipper_usage_estimated_total 2.0",
        "shipper_cost_estimated_total 1.0",
        "shipper_cost_unknown_model_total 1.0",  # no model name in the labels: apps choose them, unbounded
        "shipper_enrich_failed_total 0.0",
        "shipper_records_redacted_total 1.0",
        'shipper_redaction_rule_hits_total{rule="emails"} 1.0',
    ):
        assert line in text.splitlines(), text
