"""`make bench`: shipper's throughput, latency and memory on this machine, each beside the raw SQLite ceiling.

Everything runs on loopback (127.0.0.1 and a Unix socket) and stops by itself: the daemon as a real subprocess, a
lean fake remote in its own process, and a lean load generator in this one. Kept cheap on purpose, so that on a
2-core machine the figures measure shipper rather than the harness. Not a test: it asserts nothing, it reports.
"""
