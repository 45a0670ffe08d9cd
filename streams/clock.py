"""The time the scheduler, report links and notices go by: injectable, so tests can move it.

Contract: ``clock.now()`` returns an aware UTC datetime. The service uses :class:`SystemClock`;
tests pass a :class:`ManualClock` to ``Service(clock=...)`` and move it with ``advance``/``set``.
Durations measured for metrics or timeouts keep using ``time.monotonic`` (never this clock).
:func:`known_zone` validates the IANA time-zone names that settings carry.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def known_zone(value: str) -> str:
    """Return ``value`` if it names an IANA time zone, else raise ``ValueError`` saying so."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/London)") from exc
    return value


class Clock(Protocol):
    """Tells the current time (aware, UTC)."""

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> dt.datetime:
        """The current time, UTC."""
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that moves only when told (tests): thread-safe."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(dt.UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        """The time it was set to."""
        with self._lock:
            return self._now

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when`` (aware)."""
        with self._lock:
            self._now = when.astimezone(dt.UTC)

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        """Move forward by ``delta``; return the new time."""
        with self._lock:
            self._now += delta
            return self._now
