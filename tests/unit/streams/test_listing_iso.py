"""Date-time filters take ISO 8601 only: no number, in any spelling, is read as epoch seconds."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import TypeAdapter, ValidationError

from streams.control.listing import IsoDate, UtcDateTime


@pytest.mark.parametrize("value", ["12", "-1.5", "3.8645747268639244e-135", "1e5", " 5 ", 7, 1.5])
def test_numbers_are_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="ISO 8601"):
        TypeAdapter(UtcDateTime).validate_python(value)


def test_iso_values_are_read_in_utc() -> None:
    got = TypeAdapter(UtcDateTime).validate_python("2026-11-20T10:00:00+01:00")
    assert got == dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    assert TypeAdapter(IsoDate).validate_python("2026-11-20") == dt.date(2026, 11, 20)
