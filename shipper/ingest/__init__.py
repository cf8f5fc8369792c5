"""Ingest: one aiohttp application (native and drop-in routes) served on TCP and a Unix socket at once."""
