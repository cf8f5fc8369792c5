"""What a sidecar's `jetstream` sink and a relay share about NATS: how a link's options are made (options.py)."""
