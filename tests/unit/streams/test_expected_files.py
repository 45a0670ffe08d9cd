"""expect_file: the missing-file rule on a fake clock (time zones, daylight saving), the
setting's validation, and the monitor's gauge over a real connector-state database (SQLite)."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

from connectors.base import RemoteFile
from connectors.local import LocalConfig
from connectors.poller import Candidate
from streams.clock import ManualClock
from streams.errors import ConfigError
from streams.expected import ExpectedFileMonitor, ExpectFile, missing
from streams.metrics import Metrics
from streams.settings import ConnectorSettings, load_settings
from streams.state import ConnectorState

LONDON = ExpectFile(by="07:00", timezone="Europe/London")
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """An aware UTC instant from ``YYYY-MM-DD HH:MM``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- the rule ---------------------------------------------------------------------------------


def test_nothing_is_missing_before_the_deadline() -> None:
    # 06:59 in London (winter: London = UTC), no file ever announced
    assert missing(LONDON, None, at("2026-11-24 06:59")) is False


def test_missing_once_the_deadline_passed_without_a_file_today() -> None:
    assert missing(LONDON, None, at("2026-11-24 07:00")) is True
    yesterday = at("2026-11-23 23:59")
    assert missing(LONDON, yesterday, at("2026-11-24 09:00")) is True


def test_a_file_since_local_midnight_counts_even_after_the_deadline() -> None:
    assert missing(LONDON, at("2026-11-24 00:00"), at("2026-11-24 07:30")) is False
    assert missing(LONDON, at("2026-11-24 08:15"), at("2026-11-24 09:00")) is False


def test_the_day_and_deadline_are_local() -> None:
    # Summer: London is UTC+1, so 07:00 local is 06:00 UTC and midnight is 23:00 UTC the day
    # before: a file at 23:30 UTC on 14 July is already 15 July's.
    assert missing(LONDON, None, at("2026-07-15 05:59")) is False
    assert missing(LONDON, None, at("2026-07-15 06:00")) is True
    assert missing(LONDON, at("2026-07-14 23:30"), at("2026-07-15 06:30")) is False
    tokyo = ExpectFile(by="09:30", timezone="Asia/Tokyo")  # UTC+9: 00:30 UTC
    assert missing(tokyo, None, at("2026-11-24 00:29")) is False
    assert missing(tokyo, at("2026-11-23 14:59"), at("2026-11-24 00:30")) is True  # 23:59 JST
    assert missing(tokyo, at("2026-11-23 15:00"), at("2026-11-24 00:30")) is False  # 00:00 JST


def test_daylight_saving_days() -> None:
    # Spring forward in London (29 March 2026, 01:00 -> 02:00): 01:30 does not exist and is
    # taken with the offset before the jump (01:30 UTC).
    early = ExpectFile(by="01:30", timezone="Europe/London")
    assert missing(early, None, at("2026-03-29 01:29")) is False
    assert missing(early, None, at("2026-03-29 01:30")) is True
    # Fall back (25 October 2026): 07:00 local is 07:00 UTC again, midnight was 23:00 UTC.
    assert missing(LONDON, None, at("2026-10-25 06:59")) is False
    assert missing(LONDON, at("2026-10-24 23:10"), at("2026-10-25 07:00")) is False


# -- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("by", "7:00", "HH:MM"),
        ("by", "24:00", "HH:MM"),
        ("by", "07:60", "HH:MM"),
        ("timezone", "Europe/Londres", "unknown time zone"),
        ("timezone", "../etc/passwd", "unknown time zone"),
    ],
)
def test_bad_values_are_refused(field: str, value: str, says: str) -> None:
    fields = {"by": "07:00", "timezone": "UTC", field: value}
    with pytest.raises(ValidationError, match=says):
        ExpectFile(**fields)


def test_a_config_error_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "callstream.yaml"
    path.write_text(
        textwrap.dedent(
            """
            demo: false
            tenants:
              - id: acme
                connectors:
                  - name: daily
                    store: {type: local, root: /tmp}
                    expect_file: {by: "7am", timezone: Europe/London}
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert any("tenants.0.connectors.0.expect_file.by" in p for p in info.value.problems)


def test_the_setting_round_trips_through_a_connector() -> None:
    conn = ConnectorSettings.model_validate(
        {
            "name": "daily",
            "store": {"type": "local", "root": "/tmp"},
            "expect_file": {"by": "06:45", "timezone": "America/New_York"},
        }
    )
    assert conn.expect_file is not None and conn.expect_file.time == dt.time(6, 45)
    again = ConnectorSettings.model_validate(conn.model_dump(mode="json"))
    assert again.expect_file == conn.expect_file


# -- the monitor ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def state(tmp_path: Path) -> AsyncIterator[ConnectorState]:
    db = ConnectorState(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await db.start()
    yield db
    await db.stop()


def _context(name: str, expect: ExpectFile | None) -> Any:
    settings = ConnectorSettings(
        name=name, store=LocalConfig(root=Path("/tmp")), expect_file=expect
    )
    return SimpleNamespace(tenant="acme", name=name, settings=settings)


def _value(metrics: Metrics, connector: str) -> float | None:
    return metrics.registry.get_sample_value(
        "callstream_connector_expected_file_missing",
        {"tenant": "acme", "connector": connector},
    )


async def test_monitor_sets_the_gauge_from_the_durable_state(state: ConnectorState) -> None:
    clock = ManualClock(at("2026-11-24 06:00"))
    runner = SimpleNamespace(
        contexts={
            ("acme", "daily"): _context("daily", LONDON),
            ("acme", "adhoc"): _context("adhoc", None),
        }
    )
    metrics = Metrics()
    monitor = ExpectedFileMonitor(runner, state.engine, metrics, clock)  # type: ignore[arg-type]

    assert await monitor.update() == {("acme", "daily"): False}
    assert _value(metrics, "daily") == 0
    assert _value(metrics, "adhoc") is None  # no expectation: no series

    clock.set(at("2026-11-24 07:01"))
    assert await monitor.update() == {("acme", "daily"): True}
    assert _value(metrics, "daily") == 1

    file = RemoteFile(path="export.csv", size=10, mtime=0.0)
    await state.record_announced("acme", "daily", [(Candidate(file, 1), "f1")], clock.now())
    await monitor.update()
    assert _value(metrics, "daily") == 0

    clock.set(at("2026-11-25 07:00"))  # the next day: yesterday's file does not count
    await monitor.update()
    assert _value(metrics, "daily") == 1

    runner.contexts.pop(("acme", "daily"))  # moved to another worker: its series goes
    assert await monitor.update() == {}
    assert _value(metrics, "daily") is None
