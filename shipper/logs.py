"""Logging set-up: JSON lines on stderr for journald and log shippers, or text for humans; and rate limiting.

One line per state change, never one per record: during an outage `Throttled` folds repeats into one line per
interval with a count. Not responsible for metrics.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs each malformed request it refuses, traceback and all: any local client could flood the journal.
    logging.getLogger("aiohttp.server").addFilter(OncePerInterval())


class Throttled:
    """Logs the first occurrence at once, then at most one line per `interval` saying how many were folded."""

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last = 0.0
        self._folded = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if self._last and now - self._last < self._interval:
            self._folded += 1
            return
        if self._folded:
            self._logger.warning(msg + " (and %d more like it)", *args, self._folded)
        else:
            self._logger.warning(msg, *args)
        self._last = now
        self._folded = 0

    def reset(self) -> int:
        """Forget the interval; returns how many lines were folded and never printed."""
        folded, self._folded, self._last = self._folded, 0, 0.0
        return folded


class OncePerInterval(logging.Filter):
    """Let one record through per `interval`, without its traceback, noting how many were held back."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self._interval = interval
        self._last = 0.0
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if self._last and now - self._last < self._interval:
            self._held += 1
            return False
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = None
        record.exc_info = None
        record.exc_text = None
        if self._held:
            record.msg = f"{record.getMessage()} (and {self._held} more like it)"
            record.args = None
        self._last, self._held = now, 0
        return True
