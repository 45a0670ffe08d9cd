"""Logging set-up: readable text for people, one JSON object per line for production.

The console shows callstream's own lines at the configured level and only warnings and errors
from the frameworks underneath (Faust, mode, aiokafka, librdkafka, paramiko, alembic, aiohttp)
unless the level is DEBUG. A framework line that repeats (librdkafka retrying a refused login
every few hundred milliseconds, aiokafka reconnecting to a broker that is gone) is shown once
per minute with a count of the repeats in between, so a persistent problem is one readable
line, not a flood. A malformed HTTP request is one WARNING line, not an ERROR with a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import sys
import threading
import time

from aiohttp.http_exceptions import HttpProcessingError

FRAMEWORK_LOGGERS = (
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "librdkafka",
    "paramiko",
    "alembic",
    "aiohttp",
)
"""Loggers of the libraries callstream runs on: WARNING and above unless log_level is DEBUG."""

_DIGITS = re.compile(r"\d+")


class JsonFormatter(logging.Formatter):
    """Format a record as a single-line JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        """Render time, level, logger, message and exception text."""
        doc = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _is_framework(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FRAMEWORK_LOGGERS)


class RepeatFilter(logging.Filter):
    """Let a framework line through once per ``interval`` seconds; count the repeats.

    Lines are the same when they differ only in numbers (timings, ports, counters). The first
    line after a quiet spell carries how many were held back. callstream's own lines always pass.
    """

    def __init__(self, interval: float = 60.0, max_keys: int = 1000) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a repeat within the interval."""
        if not _is_framework(record.name):
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, _DIGITS.sub("#", message))
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{message} ({last[1]} more like this in the last {self.interval:.0f}s)"
            record.args = None
        return True


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """Log an exception that ended a thread, in the configured format (not raw on stderr).

    A thread ended by cancellation is shutting down (aiokafka's fetcher re-raises the
    cancellation of its own requests when it is closed while the broker is gone): DEBUG.
    """
    name = args.thread.name if args.thread is not None else "?"
    if args.exc_type is asyncio.CancelledError:
        logging.getLogger(__name__).debug("thread %s ended by cancellation", name)
        return
    value = args.exc_value
    if not isinstance(value, BaseException):
        logging.getLogger(__name__).error("thread %s failed: %r", name, value)
        return
    seen: set[int] = set()
    link: BaseException | None = value
    while link is not None and id(link) not in seen:  # C extensions may chain non-exceptions
        seen.add(id(link))
        for attr in ("__cause__", "__context__"):
            if not isinstance(getattr(link, attr, None), BaseException | None):
                setattr(link, attr, None)
        link = link.__cause__ or link.__context__
    exc_info = (args.exc_type, value, args.exc_traceback)
    logging.getLogger(__name__).error("thread %s failed", name, exc_info=exc_info)


class MalformedRequestFilter(logging.Filter):
    """Log a malformed HTTP request (aiohttp answered it with 400) as one WARNING line.

    aiohttp logs every request its parser refuses (a NUL in a header, a bad request line) as an
    ERROR with a traceback; that is a client's mistake, not the service's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "refused a malformed HTTP request: %s", (exc.message,)
            record.exc_info = record.exc_text = None
        return True


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send logs to stderr in the chosen format; frameworks at WARNING unless ``level`` is DEBUG.

    Exceptions that end a thread are logged through the same handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(MalformedRequestFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = max(logging.WARNING, root.level)
    framework_level = root.level if root.level <= logging.DEBUG else quiet
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(framework_level)
    threading.excepthook = _log_thread_exception
