"""Delivery: the per-sink forwarder loop and its pure retry policy."""
