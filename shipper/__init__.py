"""shipper: a durable local log shipper for LLM observability data."""

__version__ = "0.1.0"
