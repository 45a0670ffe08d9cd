"""Analysis reports: one streamed pass over a tenant's results, written as CSV and/or Excel.

Contract of :func:`build_report`:

- **Rows**: one per result analysed in the window ``[since, until)`` (on ``analysed_at``) that
  passes the filters (profile, agent, team, campaign, pass/fail) and is the *latest result of its
  case and profile as of the window's end*: a case re-analysed within the window appears once,
  with its newest result; a result superseded only after the window still appears (a report of
  a past window stays the same when run again). Rows are ordered by ``analysed_at``, then the
  result's idempotency key. Case columns (channel, start time, duration) come from the case's
  current conversation; agent, team and campaign from the result.
- **Columns**: :data:`BASE_COLUMNS` then one ``param:<parameter id>`` per parameter of the
  tenant's quality profiles in scope (the configured ones, plus the built-in default when a
  conversation can fall through to it; only the filtered profile when ``profile`` is set), in
  profile then parameter order, each id once. They are known before the first row, so the header
  comes first. A parameter a result has but no profile in scope names (an old profile version)
  is left out; a parameter that did not apply to the conversation is an empty cell.
- **Memory**: rows are read with a server-side cursor in partitions of :data:`FETCH_ROWS` and
  written as they come (xlsxwriter in ``constant_memory`` mode), so a 1,000,000-row report needs
  the same memory as a 1,000-row one. Encoding and writing run in a worker thread; the event
  loop only waits for the database.
- **Layouts**: every requested layout is written in the same pass: ``None`` is one file,
  ``n`` is files of at most ``n`` rows (0 rows: one file with the header only). A layout of one
  file is named ``<base_name>.<ext>``; several are ``<base_name>-part-001-of-003.<ext>``.
  An Excel sheet holds at most 1,048,575 rows; a longer file continues on sheets
  ``results-2``, ``results-3`` ... (each with the header).
- **Formulas**: a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR is written with
  a leading ``'`` in CSV (the OWASP CSV-injection rule) and always as a plain string in Excel
  (never a formula); numbers (scores, durations) are numbers and keep their sign.
- Errors: :class:`ReportError` for parameters that name an unknown column (before any file is
  written); database errors propagate (the caller's run fails as "handler failed").
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Self
from zoneinfo import ZoneInfo

import xlsxwriter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import JSON, Select, and_, cast, exists, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from streams.analysis.profiles import DEFAULT_PROFILE, Profile
from streams.cases.store import analysis_results, cases
from streams.codec import AvroCodec
from streams.control.listing import UtcDateTime, utc
from streams.control.text import Line
from streams.settings import Settings

ANALYSIS_RESULT = "callstream.AnalysisResult"

#: The fixed columns, in order (the issue's list); parameter columns follow.
BASE_COLUMNS: tuple[str, ...] = (
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
)
PARAM_PREFIX = "param:"
_PARAM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Rows fetched from the database (and written by the worker thread) at a time.
FETCH_ROWS = 2000
#: Partitions fetched ahead of the writer (the database works while the thread writes).
PIPELINE = 2
#: Data rows on one Excel sheet (1,048,576 rows, the header included).
SHEET_ROWS = 1_048_575
MAX_CUSTOM_DAYS = 366
_EXCEL_YEARS = (1900, 9999)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ReportError(ValueError):
    """The report's parameters cannot be built: ``field`` names the parameter (for a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ReportParams(BaseModel):
    """What a report holds: an export job's report parameters, and the body of "email me"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Line | None = Field(
        None, max_length=64, description="Quality profile id; unset: every profile."
    )
    range: Literal["previous_day", "last_7_days", "last_30_days", "custom"] = Field(
        "previous_day",
        description="Which results, by analysis time: the day before today, the 7 or 30 whole "
        "days before today (in the job's time zone), or since/until.",
    )
    since: UtcDateTime | None = Field(None, description="custom only: from (inclusive).")
    until: UtcDateTime | None = Field(None, description="custom only: to (exclusive).")
    agent: Line | None = Field(None, max_length=512, description="Only this agent id.")
    team: Line | None = Field(None, max_length=512, description="Only this team.")
    campaign: Line | None = Field(None, max_length=512, description="Only this campaign.")
    passed: bool | None = Field(None, description="true: passed only; false: failed only.")
    columns: list[str] | None = Field(
        None,
        max_length=200,
        description="Columns in this order; unset: all. Known columns: "
        + ", ".join(BASE_COLUMNS)
        + ", and param:<parameter id> for a quality parameter's score.",
        examples=[["case_id", "agent", "overall_score", "passed", "param:greeting"]],
    )
    format: Literal["csv", "xlsx"] = Field("csv", description="CSV (UTF-8) or Excel (.xlsx).")

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one column (or leave columns unset for all)")
        for name in value:
            if name in BASE_COLUMNS:
                continue
            if name.startswith(PARAM_PREFIX) and _PARAM_ID.match(name[len(PARAM_PREFIX) :]):
                continue
            raise ValueError(
                f"unknown column {name[:80]!r}: use one of {', '.join(BASE_COLUMNS)} "
                "or param:<parameter id>"
            )
        dupes = sorted({n for n in value if value.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column(s): {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _custom_range(self) -> Self:
        if self.range != "custom":
            if self.since is not None or self.until is not None:
                raise ValueError("since and until are only for range 'custom'")
            return self
        if self.since is None or self.until is None:
            raise ValueError("range 'custom' needs both since and until")
        if self.since >= self.until:
            raise ValueError("since must be before until")
        if self.until - self.since > dt.timedelta(days=MAX_CUSTOM_DAYS):
            raise ValueError(f"a custom range spans at most {MAX_CUSTOM_DAYS} days")
        return self


def window(params: ReportParams, now: dt.datetime, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Return the report's ``[since, until)`` in UTC (see :class:`ReportParams` ``range``)."""
    if params.range == "custom":
        if params.since is None or params.until is None:  # the model refuses it; for mypy
            raise ReportError("range", "range 'custom' needs both since and until")
        return params.since, params.until
    today = now.astimezone(tz).date()
    days = {"previous_day": 1, "last_7_days": 7, "last_30_days": 30}[params.range]

    def midnight(day: dt.date) -> dt.datetime:
        # A local midnight that does not exist (DST gap) maps forward, as zoneinfo does.
        return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)

    return midnight(today - dt.timedelta(days=days)), midnight(today)


def neutralise(text: str) -> str:
    """Return a CSV cell a spreadsheet will not run as a formula (OWASP: prefix ``'``)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


@dataclass(frozen=True, slots=True)
class ReportFile:
    """One written report file."""

    path: Path
    name: str
    """The download name: ``<base_name>.csv`` or ``<base_name>-part-001-of-003.csv``."""
    rows: int
    bytes: int
    content_type: str


@dataclass(frozen=True, slots=True)
class BuiltReport:
    """What :func:`build_report` wrote: the header, the data rows, the files of each layout."""

    columns: list[str]
    rows: int
    layouts: dict[int | None, list[ReportFile]]


# ---------------------------------------------------------------------- columns


def profiles_in_scope(profiles: Sequence[Profile], profile: str | None) -> list[Profile]:
    """The profiles whose results a report can hold: the configured ones, then the built-in
    default when a conversation can fall through to it; only ``profile`` when given."""
    scope = list(profiles)
    catch_all = any(
        not (p.assign.channels or p.assign.campaigns or p.assign.teams) for p in profiles
    )
    if not catch_all and all(p.id != DEFAULT_PROFILE.id for p in profiles):
        scope.append(DEFAULT_PROFILE)
    if profile is not None:
        scope = [p for p in scope if p.id == profile]
    return scope


def report_columns(profiles: Sequence[Profile], params: ReportParams) -> list[str]:
    """The report's columns: the requested ones (checked) or all of them; :class:`ReportError`
    when a ``param:`` column names no parameter of the profiles in scope."""
    seen: dict[str, None] = {}
    for p in profiles_in_scope(profiles, params.profile):
        for parameter in p.parameters:
            seen.setdefault(PARAM_PREFIX + parameter.id, None)
    if params.columns is None:
        return [*BASE_COLUMNS, *seen]
    unknown = [c for c in params.columns if c.startswith(PARAM_PREFIX) and c not in seen]
    if unknown:
        scope = f"profile {params.profile!r}" if params.profile else "the tenant's profiles"
        raise ReportError(
            "columns",
            f"unknown parameter column(s) {', '.join(unknown)}: no parameter of {scope} "
            f"has that id (known: {', '.join(seen) or 'none'})",
        )
    return list(params.columns)


# ---------------------------------------------------------------------- the query


def _conversation_field(engine: AsyncEngine, name: str) -> Any:
    """``cases.conversation ->> name`` as text, in the engine's dialect (no JSON parse in
    Python: conversations carry whole transcripts)."""
    doc: Any
    if engine.dialect.name == "postgresql":
        doc = cast(cases.c.conversation, JSON)
    else:  # SQLite: JSON functions work on the text as it is (CAST AS JSON would not)
        doc = type_coerce(cases.c.conversation, JSON)
    return doc[name].as_string()


def _query(
    engine: AsyncEngine,
    tenant: str,
    params: ReportParams,
    since: dt.datetime,
    until: dt.datetime,
    need_body: bool,
) -> Select[Any]:
    r = analysis_results.c
    newer = aliased(analysis_results)
    superseded = exists().where(
        newer.c.case_id == r.case_id,
        newer.c.profile_id == r.profile_id,
        newer.c.result_version > r.result_version,
        newer.c.analysed_at < until,
        newer.c.tenant == tenant,
    )
    columns: list[Any] = [
        r.idempotency_key,
        r.case_id,
        r.profile_id,
        r.profile_version,
        r.overall_score,
        r.passed,
        r.agent_id,
        r.team,
        r.campaign,
        cases.c.external_interaction_id,
        cases.c.channel,
        _conversation_field(engine, "started_at").label("started_at"),
        _conversation_field(engine, "ended_at").label("ended_at"),
        _conversation_field(engine, "duration_ms").label("duration_ms"),
    ]
    if need_body:
        columns.append(r.result)
    stmt = (
        select(*columns)
        .select_from(
            analysis_results.join(
                cases, and_(cases.c.case_id == r.case_id, cases.c.tenant == r.tenant)
            )
        )
        .where(r.tenant == tenant, r.analysed_at >= since, r.analysed_at < until, ~superseded)
    )
    for column, value in (
        (r.profile_id, params.profile),
        (r.passed, params.passed),
        (r.agent_id, params.agent),
        (r.team, params.team),
        (r.campaign, params.campaign),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt.order_by(r.analysed_at, r.idempotency_key)


# ---------------------------------------------------------------------- rows -> cells

Cell = str | float | int | dt.datetime | None


def _timestamp(raw: str | None) -> dt.datetime | None:
    if not raw:
        return None
    try:
        return utc(dt.datetime.fromisoformat(raw))
    except ValueError:
        return None


def _duration(row: Any, started: dt.datetime | None) -> float | None:
    if row.duration_ms not in (None, ""):
        try:
            return float(row.duration_ms) / 1000
        except ValueError:
            return None
    ended = _timestamp(row.ended_at)
    if started is not None and ended is not None:
        return (ended - started).total_seconds()
    return None


def _cells_of(columns: Sequence[str], codec: AvroCodec) -> Callable[[Any], list[Cell]]:
    """A function turning one fetched row into the report's cells, in column order."""
    params = [c for c in columns if c.startswith(PARAM_PREFIX)]

    def cells(row: Any) -> list[Cell]:
        started = _timestamp(row.started_at)
        values: dict[str, Cell] = {
            "case_id": row.case_id,
            "external_interaction_id": row.external_interaction_id,
            "channel": row.channel,
            "agent": row.agent_id,
            "team": row.team,
            "campaign": row.campaign,
            "start_time": started,
            "duration_seconds": _duration(row, started),
            "profile": row.profile_id,
            "profile_version": row.profile_version,
            "overall_score": row.overall_score,
            "passed": "pass" if row.passed else "fail",
        }
        if params:
            body = codec.decode(ANALYSIS_RESULT, bytes(row.result))
            for score in body["parameters"]:
                if score.get("applicable", True):
                    values[PARAM_PREFIX + score["id"]] = score["score"]
        return [values.get(c) for c in columns]

    return cells


# ---------------------------------------------------------------------- writers


class _Sink(Protocol):
    """One open output file."""

    def write(self, cells: Sequence[Cell]) -> None: ...

    def close(self) -> None: ...


class _CsvSink:
    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self._fh = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._fh, quoting=csv.QUOTE_MINIMAL)
        self._writer.writerow([neutralise(h) for h in header])

    def write(self, cells: Sequence[Cell]) -> None:
        self._writer.writerow([_csv_cell(c) for c in cells])

    def close(self) -> None:
        self._fh.close()


def _csv_cell(value: Cell) -> str | float | int:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


class _XlsxSink:
    """An Excel file in constant-memory mode: each row is flushed as the next one starts."""

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self._book = xlsxwriter.Workbook(
            str(path),
            {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False},
        )
        self._header = list(header)
        self._time = self._book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self._sheets = 0
        self._new_sheet()

    def _new_sheet(self) -> None:
        self._sheets += 1
        name = "results" if self._sheets == 1 else f"results-{self._sheets}"
        self._sheet = self._book.add_worksheet(name)
        for col, title in enumerate(self._header):
            self._sheet.write_string(0, col, title)
        self._row = 0

    def write(self, cells: Sequence[Cell]) -> None:
        if self._row == SHEET_ROWS:
            self._new_sheet()
        self._row += 1
        sheet, row = self._sheet, self._row
        for col, value in enumerate(cells):
            if value is None:
                continue
            if isinstance(value, str):
                sheet.write_string(row, col, value)  # never a formula, whatever it starts with
            elif isinstance(value, dt.datetime):
                if _EXCEL_YEARS[0] <= value.year <= _EXCEL_YEARS[1]:  # no zones in Excel: UTC
                    sheet.write_datetime(row, col, value.replace(tzinfo=None), self._time)
                else:  # outside what Excel can show as a date
                    sheet.write_string(row, col, _csv_cell(value))
            else:
                sheet.write_number(row, col, value)

    def close(self) -> None:
        self._book.close()


_SINKS: dict[str, tuple[str, Callable[[Path, Sequence[str]], _Sink], str]] = {
    "csv": (".csv", _CsvSink, CSV_TYPE),
    "xlsx": (".xlsx", _XlsxSink, XLSX_TYPE),
}


@dataclass
class _Layout:
    """The files of one layout, rotated every ``per_file`` rows."""

    folder: Path
    base_name: str
    fmt: str
    header: list[str]
    per_file: int | None
    done: list[tuple[Path, int]] = field(default_factory=list)
    _sink: _Sink | None = None
    _path: Path | None = None
    _rows: int = 0

    def _open(self) -> _Sink:
        ext, make, _ = _SINKS[self.fmt]
        self._path = self.folder / f"part-{len(self.done) + 1:06d}{ext}"
        self._rows = 0
        self._sink = make(self._path, self.header)
        return self._sink

    def _finish(self) -> None:
        if self._sink is not None and self._path is not None:
            self._sink.close()
            self.done.append((self._path, self._rows))
            self._sink = None

    def write(self, cells: Sequence[Cell]) -> None:
        sink = self._sink
        if sink is None or (self.per_file is not None and self._rows >= self.per_file):
            self._finish()
            sink = self._open()
        sink.write(cells)
        self._rows += 1

    def close(self) -> list[ReportFile]:
        """Close the last file (or write the header-only one) and name every file."""
        if self._sink is None and not self.done:
            self._open()
        self._finish()
        ext, _, content_type = _SINKS[self.fmt]
        total = len(self.done)
        out = []
        for i, (path, rows) in enumerate(self.done, start=1):
            name = f"{self.base_name}{ext}"
            if total > 1:
                name = f"{self.base_name}-part-{i:03d}-of-{total:03d}{ext}"
            final = path.with_name(name)
            path.replace(final)
            out.append(ReportFile(final, name, rows, final.stat().st_size, content_type))
        return out

    def abort(self) -> None:
        """Close what is open (the caller removes the folder)."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None


async def _pump(
    engine: AsyncEngine, stmt: Select[Any], write: Callable[[Sequence[Any]], None]
) -> int:
    """Stream the rows of ``stmt`` into ``write`` (a worker thread) while the next partition is
    fetched: at most :data:`PIPELINE` partitions are held at once. Return the row count."""
    queue: asyncio.Queue[Sequence[Any] | None] = asyncio.Queue(PIPELINE)

    async def fetch() -> None:
        async with engine.connect() as conn:
            result = await conn.stream(stmt.execution_options(yield_per=FETCH_ROWS))
            async for part in result.partitions(FETCH_ROWS):
                await queue.put(part)
        await queue.put(None)

    total = 0
    fetcher = asyncio.create_task(fetch(), name="report-fetch")
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, fetcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:  # the fetch failed before putting anything more
                getter.cancel()
                fetcher.result()  # raises its error
                continue  # (it finished cleanly: the end marker is in the queue)
            part = getter.result()
            if part is None:
                break
            await asyncio.to_thread(write, part)
            total += len(part)
        await fetcher
    finally:
        if not fetcher.done():
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
    return total


def safe_base_name(name: str) -> str:
    """Return ``name`` as a file name that is safe everywhere (letters, digits, ``._-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:120]
    return cleaned or "report"


async def build_report(
    engine: AsyncEngine,
    codec: AvroCodec,
    settings: Settings,
    tenant: str,
    params: ReportParams,
    *,
    now: dt.datetime,
    tz: ZoneInfo,
    out_dir: Path,
    base_name: str,
    rows_per_file: Sequence[int | None],
) -> BuiltReport:
    """Write ``tenant``'s report in every layout of ``rows_per_file`` in one pass (see the
    module doc); ``settings`` gives the tenant's profiles (``settings.profiles_of``)."""
    if not rows_per_file or any(n is not None and n < 1 for n in rows_per_file):
        raise ValueError("rows_per_file: one or more layouts, each None or at least 1")
    header = report_columns(settings.profiles_of(tenant), params)
    since, until = window(params, now, tz)
    need_body = any(c.startswith(PARAM_PREFIX) for c in header)
    stmt = _query(engine, tenant, params, since, until, need_body)
    base = safe_base_name(base_name)
    layouts = []
    for n in dict.fromkeys(rows_per_file):
        folder = out_dir / ("single" if n is None else f"per-{n}")
        folder.mkdir(parents=True, exist_ok=True)
        layouts.append(_Layout(folder, base, params.format, header, n))
    cells_of = _cells_of(header, codec)

    def write(rows: Sequence[Any]) -> None:
        for row in rows:
            cells = cells_of(row)
            for layout in layouts:
                layout.write(cells)

    try:
        total = await _pump(engine, stmt, write)
        files = await asyncio.to_thread(lambda: {lay.per_file: lay.close() for lay in layouts})
    except BaseException:
        for layout in layouts:
            layout.abort()
        raise
    return BuiltReport(columns=header, rows=total, layouts=files)
