"""Reports built from results the case store wrote, on SQLite and PostgreSQL, read back with
``csv`` and ``openpyxl``: selected columns only, filters and the window applied, one row per case
and profile (the latest in the window), another tenant never present, formula text kept text."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import update
from support import conversation_record

from streams.analysis.profiles import Profile
from streams.cases.store import CaseStore, analysis_results, case_id
from streams.codec import AvroCodec
from streams.exports.report import BuiltReport, ReportParams, build_report
from streams.settings import Settings, TenantSettings
from streams.topics import Topics

UTC = dt.UTC
DAY = dt.datetime(2026, 11, 22, tzinfo=UTC)  # the report's day (previous_day of NOW)
NOW = DAY + dt.timedelta(days=1, hours=9)
EVIL = '=HYPERLINK("http://evil.example/","click")'
SALES = Profile.model_validate(
    {
        "id": "sales",
        "version": 2,
        "assign": {"campaigns": ["spring"]},
        "parameters": [
            {
                "id": "greeting",
                "rule": {"type": "phrase_present", "phrases": ["hello"]},
            },
            {"id": "upsell", "rule": {"type": "phrase_present", "phrases": ["offer"]}},
        ],
    }
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        demo=False,
        tenants=[
            TenantSettings(id="acme", profiles=(SALES,)),
            TenantSettings(id="globex", profiles=(SALES,)),
        ],
    )


def conv(ext: str, tenant: str = "acme", text: str = "Hello, how can I help?", **kw: Any) -> dict:
    return conversation_record(
        ext,
        tenant=tenant,
        source_system="five9",
        channel="chat",
        started_at=DAY + dt.timedelta(hours=8),
        duration_ms=125_500,
        turns=[{"speaker": "agent", "at": None, "text": text}],
        **kw,
    )


async def analysed_at(
    store: CaseStore, tenant: str, ext: str, version: int, when: dt.datetime
) -> None:
    cid = case_id(tenant, "five9", ext)
    r = analysis_results.c
    async with store.engine.begin() as conn:
        await conn.execute(
            update(analysis_results)
            .where(r.case_id == cid, r.case_version == version)
            .values(analysed_at=when)
        )


@pytest.fixture
async def store(database_url: str, settings: Settings) -> AsyncIterator[CaseStore]:
    """Results written through the case store, then placed in time."""
    async with CaseStore(database_url, AvroCodec(), Topics("t"), settings.profiles_of) as s:
        spring = {"campaign": "spring"}
        await s.apply(
            [
                conv("c1", agent_id=EVIL, team="red", **spring),
                conv("c2", agent_id="a2", team="blue", text="Good day", **spring),
                conv("c3", agent_id="a3", team="red", campaign="autumn"),
                conv("c5", agent_id="a5", team="red", **spring),
                conv("c6", agent_id="a6", team="red", **spring),
                conv("g1", tenant="globex", agent_id="a1", team="red", **spring),
            ]
        )
        hour = dt.timedelta(hours=1)
        for ext, at in (("c1", 1), ("c2", 2), ("c3", 3), ("c6", 4)):
            await analysed_at(s, "acme", ext, 1, DAY + at * hour)
        await analysed_at(s, "acme", "c5", 1, DAY - hour)  # the day before: not in the report
        await analysed_at(s, "globex", "g1", 1, DAY + hour)
        # c1 is re-analysed within the day (one row, the newest); c6 only after it (its first
        # result stays in the day's report).
        await s.apply([conv("c1", agent_id=EVIL, team="red", text="Hello, an offer", **spring)])
        await analysed_at(s, "acme", "c1", 2, DAY + 5 * hour)
        await s.apply([conv("c6", agent_id="a6", team="red", text="bye", **spring)])
        await analysed_at(s, "acme", "c6", 2, DAY + 30 * hour)
        yield s


async def build(
    store: CaseStore, settings: Settings, tmp_path: Path, params: ReportParams, *layouts: Any
) -> BuiltReport:
    return await build_report(
        store.engine,
        store.codec,
        settings,
        "acme",
        params,
        now=NOW,
        tz=ZoneInfo("UTC"),
        out_dir=tmp_path / "out",
        base_name="acme-quality",
        rows_per_file=list(layouts) or [None],
    )


def read_back(path: Path) -> list[list[Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return [list(r) for r in csv.reader(fh)]
    return [list(r) for r in openpyxl.load_workbook(path).active.iter_rows(values_only=True)]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
async def test_selected_columns_filters_and_latest_results(
    store: CaseStore, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    columns = ["agent", "case_id", "passed", "param:greeting", "param:upsell", "duration_seconds"]
    params = ReportParams(profile="sales", team="red", columns=columns, format=fmt)
    built = await build(store, settings, tmp_path, params)
    (only,) = built.layouts[None]
    assert only.name == f"acme-quality.{fmt}" and built.columns == columns
    rows = read_back(only.path)
    assert rows[0] == columns
    cid = {ext: case_id("acme", "five9", ext) for ext in ("c1", "c6")}
    quoted = "'" + EVIL if fmt == "csv" else EVIL
    # c2 is blue, c3 another profile, c5 the day before, g1 another tenant; c1 once, newest.
    if fmt == "csv":
        assert rows[1:] == [
            ["a6", cid["c6"], "fail", "100.0", "0.0", "125.5"],
            [quoted, cid["c1"], "pass", "100.0", "100.0", "125.5"],
        ]
    else:
        assert rows[1:] == [
            ["a6", cid["c6"], "fail", 100, 0, 125.5],
            [quoted, cid["c1"], "pass", 100, 100, 125.5],
        ]
    assert built.rows == only.rows == 2


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
async def test_every_column_and_both_layouts_in_one_pass(
    store: CaseStore, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    built = await build(store, settings, tmp_path, ReportParams(format=fmt), None, 2)
    assert built.rows == 4  # c2, c3, c6, c1 (v2)
    (single,) = built.layouts[None]
    parts = built.layouts[2]
    assert [p.name for p in parts] == [
        f"acme-quality-part-001-of-002.{fmt}",
        f"acme-quality-part-002-of-002.{fmt}",
    ]
    assert [p.rows for p in parts] == [2, 2]
    whole = read_back(single.path)
    assert read_back(parts[0].path) + read_back(parts[1].path)[1:] == whole
    header = whole[0]
    assert header[:12] == [
        "case_id",
        "external_interaction_id",
        "channel",
        "agent",
        "team",
        "campaign",
        "start_time",
        "duration_seconds",
        "profile",
        "profile_version",
        "overall_score",
        "passed",
    ]
    assert header[12:14] == ["param:greeting", "param:upsell"]
    assert "param:sentiment" in header  # the default profile's (c3 fell through to it)
    by_ext = {row[1]: dict(zip(header, row, strict=True)) for row in whole[1:]}
    assert [row[1] for row in whole[1:]] == ["c2", "c3", "c6", "c1"]  # by analysis time
    c3 = by_ext["c3"]
    assert (c3["profile"], c3["campaign"], c3["param:upsell"]) == (
        "default",
        "autumn",
        None if fmt == "xlsx" else "",
    )
    c1 = by_ext["c1"]
    assert c1["profile_version"] in (2, "2") and c1["channel"] == "chat"
    if fmt == "csv":
        assert c1["start_time"] == "2026-11-22T08:00:00Z"
    else:
        assert c1["start_time"] == dt.datetime(2026, 11, 22, 8, 0)  # noqa: DTZ001 - Excel: UTC


async def test_an_empty_window_gives_a_header_only_file(
    store: CaseStore, settings: Settings, tmp_path: Path
) -> None:
    params = ReportParams(
        range="custom", since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00Z"
    )
    built = await build(store, settings, tmp_path, params, 1000)
    (only,) = built.layouts[1000]
    assert (built.rows, only.rows, only.name) == (0, 0, "acme-quality.csv")
    assert len(read_back(only.path)) == 1
