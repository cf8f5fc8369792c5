"""The `jetstream` sink: a sidecar's rows published into a replicated NATS JetStream stream (sink.py), as versioned
envelopes (shipper/jetstream/envelope.py, which relays read), over a connection kept in the background
(connection.py), with the sidecar's id and the ordering groups its keys were published in kept beside the spool
(state.py)."""

from shipper.sinks.jetstream.sink import JetStreamSink

__all__ = ["JetStreamSink"]
