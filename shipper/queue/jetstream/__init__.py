"""A relay's queue: the stream's partitions as the rows its forwarders lease (queue.py), the messages it holds under
the ordering rule (holding.py), one durable consumer per partition (consumer.py), the connection (link.py), what the
relays share (shared.py) and who owns which partition (ownership.py, shares.py)."""
