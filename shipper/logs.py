"""Logging set-up: JSON lines on stderr for journald and log shippers, or text for humans; and rate limiting.

Both formats carry the same facts: the structured fields a call passes in `extra` (addresses, sinks, counts) are
JSON keys in one and `key=value` pairs after the message in the other. Times are RFC 3339 UTC in both, so a line
reads the same in any time zone. One line per state change, never one per record: during an outage `Throttled`
folds repeats into one line per interval with a count. Not responsible for metrics.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def rfc3339(created: float, timespec: str = "milliseconds") -> str:
    """`2026-12-01T22:50:16.123Z`: UTC with milliseconds, what journald exports and log stores parse (and what the
    dead-letter views show)."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def human_age(seconds: float | None) -> str:
    """`42s`, `17m`, `3.5h`: an age or a duration as the status table and the stop line say it."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the call passed in `extra`: every attribute a bare LogRecord does not have."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`<ts> LEVEL logger: message key=value ...`; a value that is not a plain word is written as JSON."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{rfc3339(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        pairs = [f"{key}={_text_value(value)}" for key, value in extra_fields(record).items()]
        if pairs:
            line += " " + " ".join(pairs)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '="' for c in value):
        return value
    return orjson.dumps(value, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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
