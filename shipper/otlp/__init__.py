"""OpenTelemetry in: OTLP export requests read (wire.py), LLM spans recognised in every convention (genai.py) and
planned as each routed vendor's own records (plan.py). Pure: no HTTP, no spool (shipper/ingest/otlp.py serves it)."""
