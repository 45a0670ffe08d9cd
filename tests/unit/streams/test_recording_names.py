"""Recording names: the seed's default pattern, configured fields, time zones, refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.ingest.recnames import NamePattern


def test_default_pattern_reads_call_time_and_user() -> None:
    found = NamePattern().match("20201012-140253_joe_baducci.wav")
    assert found is not None
    assert found.stem == "20201012-140253_joe_baducci" and found.ext == "wav"
    assert found.call_time == dt.datetime(2020, 10, 12, 14, 2, 53, tzinfo=dt.UTC)
    assert found.fields == {"uid": "joe_baducci"}


def test_call_time_is_read_in_the_tenant_time_zone() -> None:
    found = NamePattern(timezone="America/New_York").match("20201012-140253_joe.mp3")
    assert found is not None and found.call_time == dt.datetime(
        2020, 10, 12, 18, 2, 53, tzinfo=dt.UTC
    )


def test_configured_fields_direction_session_and_numbers() -> None:
    pattern = NamePattern("{yyyyMMdd}-{hhmmss}_{uid}_{direction}_{session_id}_{ani}_{dnis}.{ext}")
    found = pattern.match("20261123-091500_ann.lee_OUT_A1B2-c3_+14155550100_18005550199.WAV")
    assert found is not None
    assert found.fields == {
        "uid": "ann.lee",
        "direction": "outbound",
        "session_id": "A1B2-c3",
        "ani": "+14155550100",
        "dnis": "18005550199",
    }
    assert found.ext == "wav"


def test_by_id_pattern_has_no_call_time() -> None:
    found = NamePattern("{source}_{id}.{ext}").match("ringcentral_BXyT30eVTWIZjUA.wav")
    assert found is not None and found.call_time is None
    assert found.fields == {"source": "ringcentral", "id": "BXyT30eVTWIZjUA"}


@pytest.mark.parametrize(
    "name",
    [
        "joe.wav",  # no time
        "20201312-140253_joe.wav",  # month 13
        "20210229-140253_joe.wav",  # not a leap year
        "20201012-250253_joe.wav",  # hour 25
        "20201012-140253_.wav",  # empty uid
        "20201012-140253_joe",  # no extension
        "x/20201012-140253_joe.wav",  # a folder is not part of a name
    ],
)
def test_names_that_do_not_fit_are_refused(name: str) -> None:
    assert NamePattern().match(name) is None


def test_second_60_is_a_leap_second() -> None:
    found = NamePattern().match("20161231-235960_joe.wav")
    assert found is not None and found.call_time == dt.datetime(2017, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("{yyyyMMdd}-{hhmmss}_{uid", "unbalanced"),
        ("{uid}_{uid}.{ext}", "twice"),
        ("{ext}_{uid}", "must end"),
        ("{hhmmss}_{uid}.{ext}", "no date"),
        ("{yyyy}{MM}_{uid}", "needs all"),
        ("{u-id}.{ext}", "bad token"),
        ("plain.wav", "no {token}"),
    ],
)
def test_bad_patterns_say_what_is_wrong(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NamePattern.validate(pattern)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        NamePattern(timezone="Mars/Olympus")
