"""Where rows wait between intake and delivery, besides the SQLite spool: the in-memory queue (tests)."""
