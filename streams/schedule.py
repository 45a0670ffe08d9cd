"""When a job fires: one-time, daily, weekly (a weekday) or monthly (a day), at a local time.

Pure functions over a :class:`Schedule`; no I/O. Contract:

* An occurrence is the job's local ``time`` on a date, in the job's IANA ``timezone``, between
  ``start_date`` and ``end_date`` (inclusive; ``None``: never ends). ``one_time`` has exactly one
  occurrence, on ``start_date``.
* Daylight saving: a local time that does not exist that day (the clocks jump over it) fires at
  the same instant the offset before the jump gives, i.e. shifted forward by the jump (02:30 on
  a spring-forward night in Europe/Berlin fires at 03:30 local); a local time that happens twice
  (clocks go back) fires at its first occurrence. Either way a date has exactly one occurrence,
  so a daily job fires once per local day, 23-, 24- or 25-hour days alike.
* ``monthly`` on day 29-31 fires on the month's last day when the month is shorter.
* :func:`latest` is the newest occurrence at or before an instant, :func:`following` the first
  one strictly after it (``None`` when there is none: past the end date, or a one-time job done).
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

Frequency = Literal["one_time", "daily", "weekly", "monthly"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

_SEARCH_DAYS = 400
"""How far a search walks (days): every frequency fires at least once in 31 days."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a job fires (see the module doc)."""

    frequency: Frequency
    time: dt.time
    timezone: str
    start_date: dt.date
    end_date: dt.date | None = None
    weekday: Weekday | None = None
    day_of_month: int | None = None

    def __post_init__(self) -> None:
        if self.frequency == "weekly" and self.weekday is None:
            raise ValueError("a weekly schedule needs a weekday")
        if self.frequency == "monthly" and not 1 <= (self.day_of_month or 0) <= 31:
            raise ValueError("a monthly schedule needs a day_of_month from 1 to 31")
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    def fires_on(self, day: dt.date) -> bool:
        """Whether the job has an occurrence on local date ``day``."""
        if day < self.start_date or (self.end_date is not None and day > self.end_date):
            return False
        if self.frequency == "one_time":
            return day == self.start_date
        if self.frequency == "daily":
            return True
        if self.frequency == "weekly":
            return WEEKDAYS[day.weekday()] == self.weekday
        assert self.day_of_month is not None  # noqa: S101 - checked in __post_init__
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day == min(self.day_of_month, last)

    def at(self, day: dt.date) -> dt.datetime:
        """The UTC instant of the occurrence on local date ``day`` (see the DST rules)."""
        local = dt.datetime.combine(day, self.time, tzinfo=self.zone)  # fold=0: first/before
        return local.astimezone(dt.UTC)


def _local_day(schedule: Schedule, instant: dt.datetime) -> dt.date:
    return instant.astimezone(schedule.zone).date()


def latest(schedule: Schedule, instant: dt.datetime) -> dt.datetime | None:
    """The newest occurrence at or before ``instant`` (UTC), or None."""
    day = min(_local_day(schedule, instant) + dt.timedelta(days=1), _last_day(schedule))
    for _ in range(_SEARCH_DAYS):
        if day < schedule.start_date:
            return None
        if schedule.fires_on(day):
            when = schedule.at(day)
            if when <= instant:
                return when
        day -= dt.timedelta(days=1)
    return None


def following(schedule: Schedule, instant: dt.datetime) -> dt.datetime | None:
    """The first occurrence strictly after ``instant`` (UTC), or None."""
    day = max(_local_day(schedule, instant) - dt.timedelta(days=1), schedule.start_date)
    for _ in range(_SEARCH_DAYS):
        if schedule.end_date is not None and day > schedule.end_date:
            return None
        if schedule.fires_on(day):
            when = schedule.at(day)
            if when > instant:
                return when
        day += dt.timedelta(days=1)
    return None


def _last_day(schedule: Schedule) -> dt.date:
    return schedule.end_date if schedule.end_date is not None else dt.date.max
