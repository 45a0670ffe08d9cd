"""Report export benchmark: time and peak RSS growth to build a report of N results as CSV and as
Excel (figures only, nothing about speed is asserted; the row counts of the output are).

N result rows (and their cases) are bulk-copied straight into PostgreSQL (the production
database; ``COPY`` through asyncpg), every row with a realistic Avro result body (the default
profile's 8 parameters with evidence) and a conversation with a short transcript, all analysed
within one day. ``build_report`` then writes that day's report with every column (12 fixed +
8 parameter scores) in one streamed pass: as one CSV, as one Excel file (xlsxwriter,
constant-memory), and as one CSV plus the e-mail layout (1,000-row files) at once. Peak RSS
growth is the process's VmHWM over its RSS before each build (the C heap included).

CI builds 50,000 rows; the full size::

    make bench-export        # CALLSTREAM_EXPORT_BENCH_ROWS=1000000
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from report import MB, PeakRss, print_table
from servers.postgres import PostgresServer

from streams.analysis.engine import analyse
from streams.analysis.profiles import DEFAULT_PROFILE
from streams.cases.store import ANALYSIS_RESULT, Database, analysis_results, cases
from streams.codec import AvroCodec
from streams.exports.report import BuiltReport, ReportParams, build_report
from streams.settings import Settings

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("CALLSTREAM_EXPORT_BENCH_ROWS", "50000"))
COPY_ROWS = 20_000
TENANT = "bench"
DAY = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
NOW = DAY + dt.timedelta(days=1, hours=2)


def _conversation(i: int) -> dict[str, Any]:
    start = DAY + dt.timedelta(seconds=i % 86_000)
    return {
        "tenant": TENANT,
        "source_system": "bench",
        "external_interaction_id": f"CALL-{i:07d}",
        "channel": "voice",
        "direction": "inbound",
        "started_at": start,
        "ended_at": start + dt.timedelta(seconds=240),
        "agent_id": f"agent-{i % 50:02d}",
        "agent_name": None,
        "team": f"team-{i % 5}",
        "campaign": ("spring", "summer", "=cmd|' /C calc'!A0")[i % 3],
        "ani": "+14155550100",
        "dnis": "+14155550199",
        "recording_ref": None,
        "transcript_ref": None,
        "turns": [
            {"speaker": "agent", "at": start, "text": "Hello, thank you for calling"},
            {"speaker": "customer", "at": start + dt.timedelta(seconds=5), "text": "My bill"},
            {"speaker": "agent", "at": start + dt.timedelta(seconds=9), "text": "Let me check"},
            {"speaker": "agent", "at": start + dt.timedelta(seconds=200), "text": "Anything else?"},
        ],
        "metadata": {"queue": "billing"},
        "source": None,
        "duration_ms": 240_000,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


async def _fill(url: str, rows: int) -> float:
    """Copy ``rows`` cases and results into the database; return the seconds it took."""
    codec = AvroCodec()
    samples = []
    for i in range(3):  # three bodies (passed / not): the decode cost of real results
        conv = _conversation(i)
        analysis = analyse(DEFAULT_PROFILE, conv)
        body = {
            "idempotency_key": "k",
            "tenant": TENANT,
            "case_id": "c",
            "case_version": 1,
            "external_interaction_id": conv["external_interaction_id"],
            "result_version": 1,
            **analysis,
            "analysed_at": DAY,
        }
        text = json.dumps(_jsonable({k: v for k, v in conv.items() if k != "source"}))
        samples.append((codec.encode(ANALYSIS_RESULT, body, trusted=True), analysis, text))
    t0 = time.perf_counter()
    async with Database(url) as db, db.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        for start in range(0, rows, COPY_ROWS):
            case_rows, result_rows = [], []
            for i in range(start, min(rows, start + COPY_ROWS)):
                encoded, analysis, text = samples[i % 3]
                cid = f"{i:032x}"
                at = DAY + dt.timedelta(microseconds=i * (86_000_000_000 // max(rows, 1)))
                case_rows.append(
                    (
                        cid,
                        TENANT,
                        "bench",
                        f"CALL-{i:07d}",
                        1,
                        "h" * 64,
                        "voice",
                        text,
                        None,
                        at,
                        at,
                    )
                )
                result_rows.append(
                    (
                        f"{cid}:1:default:1",
                        TENANT,
                        cid,
                        1,
                        1,
                        "default",
                        1,
                        analysis["overall_score"],
                        analysis["passed"],
                        encoded,
                        at,
                        f"agent-{i % 50:02d}",
                        f"team-{i % 5}",
                        ("spring", "summer", "=cmd|' /C calc'!A0")[i % 3],
                    )
                )
            await raw.copy_records_to_table(
                "cases", records=case_rows, columns=[c.name for c in cases.columns]
            )
            await raw.copy_records_to_table(
                "analysis_results",
                records=result_rows,
                columns=[c.name for c in analysis_results.columns],
            )
        await conn.commit()
        await conn.exec_driver_sql("ANALYZE cases")
        await conn.exec_driver_sql("ANALYZE analysis_results")
        await conn.commit()
    return time.perf_counter() - t0


def _xlsx_rows(path: Path) -> int:
    """Data rows of every sheet, counted in the XML as it streams (openpyxl would take minutes)."""
    rows = 0
    with zipfile.ZipFile(path) as book:
        for name in book.namelist():
            if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", name):
                with book.open(name) as sheet:
                    tail = b""
                    while chunk := sheet.read(1 << 20):
                        data = tail + chunk
                        rows += data.count(b"<row ")
                        tail = data[-4:]
                        rows -= tail.count(b"<row ")  # counted again with the next chunk
                rows -= 1  # the header
    return rows


def _csv_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh) - 1  # no field holds a line break here


def _count(path: Path) -> int:
    return _csv_rows(path) if path.suffix == ".csv" else _xlsx_rows(path)


def test_export_report_time_and_memory(pg_server: PostgresServer, tmp_path: Path) -> None:
    pg_server.reset()
    url = pg_server.async_url()
    fill_s = asyncio.run(_fill(url, ROWS))
    settings = Settings(data_dir=tmp_path, demo=False, database={"url": url})
    codec = AvroCodec()

    async def build(fmt: str, layouts: list[int | None], out: Path) -> tuple[float, BuiltReport]:
        async with Database(url) as db:  # opened (and its schema checked) outside the timing
            t0 = time.perf_counter()
            built = await build_report(
                db.engine,
                codec,
                settings,
                TENANT,
                ReportParams(format=fmt),
                now=NOW,
                tz=ZoneInfo("UTC"),
                out_dir=out,
                base_name="bench",
                rows_per_file=layouts,
            )
            return time.perf_counter() - t0, built

    table = []
    for label, fmt, layouts in (
        ("CSV, one file", "csv", [None]),
        ("Excel, one file", "xlsx", [None]),
        ("CSV, one file + 1,000-row files", "csv", [None, 1000]),
    ):
        out = tmp_path / re.sub(r"\W+", "-", label)
        rss = PeakRss()
        rss.start()
        seconds, built = asyncio.run(build(fmt, layouts, out))
        growth = rss.growth_mb()
        assert built.rows == ROWS
        for n, files in built.layouts.items():
            assert sum(f.rows for f in files) == ROWS
            assert [_count(f.path) for f in files] == [f.rows for f in files]
            if n is not None:
                assert len(files) == -(-ROWS // n)
        size = sum(f.bytes for f in built.layouts[None])
        table.append(
            [
                label,
                f"{seconds:.1f}",
                f"{ROWS / seconds:,.0f}",
                f"{size / MB:,.0f}",
                f"{growth:.0f}",
            ]
        )
        for files in built.layouts.values():
            for f in files:
                f.path.unlink()
    print_table(
        f"report export: {ROWS:,} results, 20 columns, PostgreSQL (loaded in {fill_s:.0f} s)",
        ["build", "seconds", "rows/s", "file MB", "peak RSS growth MB"],
        table,
        [
            "One streamed pass per build (server-side cursor, 2,000-row partitions); the Avro "
            "result body is decoded per row for the parameter scores.",
            f"CALLSTREAM_EXPORT_BENCH_ROWS={ROWS}; full size: make bench-export (1,000,000).",
        ],
    )
