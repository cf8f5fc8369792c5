"""The pure core: vocabulary and decisions with no I/O (no aiohttp, no sqlite3)."""
