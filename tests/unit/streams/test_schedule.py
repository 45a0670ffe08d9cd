"""When jobs fire: daily in Asia/Kolkata, weekly and monthly across DST, gaps and folds."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.schedule import Schedule, following, latest

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def test_daily_0230_ist_is_2100_utc_the_day_before() -> None:
    s = Schedule("daily", dt.time(2, 30), "Asia/Kolkata", dt.date(2026, 11, 1))
    assert following(s, at("2026-11-20T12:00:00+00:00")) == at("2026-11-20T21:00:00+00:00")
    assert latest(s, at("2026-11-20T12:00:00+00:00")) == at("2026-11-19T21:00:00+00:00")
    assert latest(s, at("2026-11-20T21:00:00+00:00")) == at("2026-11-20T21:00:00+00:00")
    assert latest(s, at("2026-10-31T20:59:00+00:00")) is None  # before the start date


def test_weekly_keeps_local_time_across_the_dst_change() -> None:
    # Europe/Berlin leaves summer time on Sunday 2026-10-25.
    s = Schedule("weekly", dt.time(9, 0), "Europe/Berlin", dt.date(2026, 10, 1), weekday="monday")
    first = following(s, at("2026-10-15T00:00:00+00:00"))
    second = following(s, first) if first else None
    assert first == at("2026-10-19T09:00:00+02:00")
    assert second == at("2026-10-26T09:00:00+01:00")  # still 09:00 local, one hour later in UTC


def test_monthly_day_31_falls_on_the_last_day_and_crosses_dst() -> None:
    s = Schedule("monthly", dt.time(1, 0), "America/New_York", dt.date(2026, 1, 1), day_of_month=31)
    got = []
    t = at("2026-02-01T00:00:00+00:00")
    for _ in range(3):
        nxt = following(s, t)
        assert nxt is not None
        got.append(nxt)
        t = nxt
    assert got == [
        at("2026-02-28T01:00:00-05:00"),
        at("2026-03-31T01:00:00-04:00"),  # after the March 8 change: EDT
        at("2026-04-30T01:00:00-04:00"),
    ]


def test_a_nonexistent_local_time_fires_once_shifted_and_a_repeated_one_fires_once() -> None:
    s = Schedule("daily", dt.time(2, 30), "Europe/Berlin", dt.date(2026, 3, 28))
    spring = following(s, at("2026-03-28T12:00:00+00:00"))  # 29 March: 02:00 -> 03:00
    assert spring == at("2026-03-29T01:30:00+00:00")  # 03:30 local
    autumn = following(s, at("2026-10-24T12:00:00+00:00"))  # 25 Oct: 02:30 happens twice
    assert autumn == at("2026-10-25T00:30:00+00:00")  # the first 02:30 (summer time)
    assert following(s, autumn) == at("2026-10-26T01:30:00+00:00")


def test_end_date_and_one_time() -> None:
    s = Schedule("daily", dt.time(6, 0), "UTC", dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 3))
    assert following(s, at("2026-01-03T06:00:00+00:00")) is None
    assert latest(s, at("2026-02-01T00:00:00+00:00")) == at("2026-01-03T06:00:00+00:00")
    once = Schedule("one_time", dt.time(6, 0), "UTC", dt.date(2026, 1, 2))
    assert following(once, at("2026-01-01T00:00:00+00:00")) == at("2026-01-02T06:00:00+00:00")
    assert following(once, at("2026-01-02T06:00:00+00:00")) is None


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="weekday"):
        Schedule("weekly", dt.time(1), "UTC", dt.date(2026, 1, 1))
    with pytest.raises(ValueError, match="day_of_month"):
        Schedule("monthly", dt.time(1), "UTC", dt.date(2026, 1, 1), day_of_month=32)
    with pytest.raises(ValueError, match="end_date"):
        Schedule("daily", dt.time(1), "UTC", dt.date(2026, 1, 2), end_date=dt.date(2026, 1, 1))
