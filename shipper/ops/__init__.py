"""Operations: what the running daemon shows of itself (health, readiness, metrics, live status), off the data path."""
