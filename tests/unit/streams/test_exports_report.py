"""Report parameters, the window, columns and formula neutralisation (no database)."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from pydantic import ValidationError

from streams.analysis.profiles import DEFAULT_PROFILE, Assignment, Profile
from streams.exports.report import (
    BASE_COLUMNS,
    ReportError,
    ReportParams,
    _Layout,
    neutralise,
    report_columns,
    safe_base_name,
    window,
)

KOLKATA = ZoneInfo("Asia/Kolkata")
BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC

HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


def at(*args: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


# ------------------------------------------------------------------ window


def test_previous_day_is_yesterday_in_the_zone() -> None:
    # 01:00 IST on the 23rd is still the 22nd in UTC: "yesterday" is the 22nd in Kolkata.
    now = at(2026, 11, 22, 19, 30)
    since, until = window(ReportParams(), now, KOLKATA)
    assert since == at(2026, 11, 22, tz=KOLKATA).astimezone(UTC) == at(2026, 11, 21, 18, 30)
    assert until == at(2026, 11, 23, tz=KOLKATA).astimezone(UTC)
    assert since.tzinfo is UTC and until.tzinfo is UTC


def test_last_n_days_are_whole_days_before_today() -> None:
    now = at(2026, 11, 23, 9)
    since7, until7 = window(ReportParams(range="last_7_days"), now, UTC)
    assert (since7, until7) == (at(2026, 11, 16), at(2026, 11, 23))
    since30, until30 = window(ReportParams(range="last_30_days"), now, UTC)
    assert (since30, until30) == (at(2026, 10, 24), at(2026, 11, 23))


def test_window_across_a_dst_change_keeps_local_midnights() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours.
    since, until = window(ReportParams(), at(2026, 10, 26, 8), BERLIN)
    assert until - since == dt.timedelta(hours=25)
    assert since.astimezone(BERLIN).hour == 0 and until.astimezone(BERLIN).hour == 0


def test_custom_window_is_as_given_in_utc() -> None:
    params = ReportParams(
        range="custom", since="2026-11-01T00:00:00+05:30", until="2026-11-02T00:00:00Z"
    )
    assert window(params, at(2030, 1, 1), KOLKATA) == (at(2026, 10, 31, 18, 30), at(2026, 11, 2))


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"range": "custom"}, "needs both since and until"),
        ({"range": "custom", "since": "2026-11-02T00:00:00Z"}, "needs both"),
        (
            {"range": "custom", "since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
            "since must be before until",
        ),
        (
            {"range": "custom", "since": "2025-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
            "at most 366 days",
        ),
        ({"since": "2026-11-01T00:00:00Z"}, "only for range 'custom'"),
        ({"range": "custom", "since": 1700000000, "until": "2026-11-01T00:00:00Z"}, "ISO 8601"),
        ({"columns": ["case_id", "salary"]}, "unknown column 'salary'"),
        ({"columns": ["param:Bad Id"]}, "unknown column 'param:Bad Id'"),
        ({"columns": ["agent", "team", "agent"]}, "duplicate column(s): agent"),
        ({"columns": []}, "at least one column"),
        ({"format": "pdf"}, "format"),
        ({"range": "yesterday"}, "range"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"agent": "a\nb"}, "agent"),
    ],
)
def test_bad_parameters_are_refused_naming_the_problem(
    data: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ReportParams.model_validate(data)
    assert needle in str(caught.value)


def test_parameters_round_trip_as_stored_json() -> None:
    params = ReportParams(
        profile="sales",
        range="custom",
        since="2026-11-01T00:00:00Z",
        until="2026-11-08T00:00:00Z",
        agent="a1",
        passed=False,
        columns=["case_id", "param:greeting"],
        format="xlsx",
    )
    assert ReportParams.model_validate_json(params.model_dump_json()) == params


# ------------------------------------------------------------------ columns

SALES = Profile.model_validate(
    {
        "id": "sales",
        "assign": {"campaigns": ["spring"]},
        "parameters": [
            {"id": "greeting", "rule": {"type": "metadata_complete", "fields": ["agent_id"]}},
            {"id": "upsell", "rule": {"type": "phrase_present", "phrases": ["offer"]}},
        ],
    }
)


def test_all_columns_are_the_base_then_every_parameter_once() -> None:
    columns = report_columns([SALES], ReportParams())
    assert columns[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    params = columns[len(BASE_COLUMNS) :]
    # sales first, then the default profile (a conversation outside "spring" falls to it);
    # "greeting" is in both and appears once.
    assert params[:2] == ["param:greeting", "param:upsell"]
    assert len(params) == len(set(params)) == 2 + len(DEFAULT_PROFILE.parameters) - 1


def test_a_catch_all_profile_hides_the_default_and_a_filter_narrows() -> None:
    catch_all = SALES.model_copy(update={"assign": Assignment()})
    assert report_columns([catch_all], ReportParams())[len(BASE_COLUMNS) :] == [
        "param:greeting",
        "param:upsell",
    ]
    only_default = report_columns([SALES], ReportParams(profile="default"))
    assert "param:upsell" not in only_default and "param:sentiment" in only_default


def test_selected_columns_keep_their_order_and_unknown_parameters_are_named() -> None:
    chosen = ["passed", "param:upsell", "case_id"]
    assert report_columns([SALES], ReportParams(columns=chosen)) == chosen
    with pytest.raises(ReportError) as caught:
        report_columns([SALES], ReportParams(profile="default", columns=["param:upsell"]))
    assert caught.value.field == "columns" and "param:upsell" in caught.value.message


# ------------------------------------------------------------------ writers


def test_neutralise_prefixes_exactly_the_formula_starts() -> None:
    assert [neutralise(v) for v in HOSTILE] == ["'" + v for v in HOSTILE]
    for fine in ("agent 7", "1+1", "a=b", "'quoted", "", "Ölçer"):
        assert neutralise(fine) == fine


def _write(tmp_path: Path, fmt: str, per_file: int | None, rows: list[list[object]]) -> list:
    header = ["agent", "overall_score", "start_time", "team"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    layout = _Layout(tmp_path, "rep", fmt, header, per_file)
    for row in rows:
        layout.write(row)
    return layout.close()


def test_formula_looking_text_stays_text_in_csv_and_excel(tmp_path: Path) -> None:
    started = at(2026, 11, 20, 9, 30)
    rows: list[list[object]] = [[v, -2.5, started, None] for v in HOSTILE]
    (csv_file,) = _write(tmp_path / "c", "csv", None, rows)
    (xlsx_file,) = _write(tmp_path / "x", "xlsx", None, rows)

    with csv_file.path.open(newline="", encoding="utf-8") as fh:
        read = list(csv.reader(fh))
    assert read[0] == ["agent", "overall_score", "start_time", "team"]
    assert [r[0] for r in read[1:]] == ["'" + v for v in HOSTILE]
    assert {r[1] for r in read[1:]} == {"-2.5"}  # a number keeps its sign
    assert {r[2] for r in read[1:]} == {"2026-11-20T09:30:00Z"}
    assert {r[3] for r in read[1:]} == {""}

    book = openpyxl.load_workbook(xlsx_file.path)
    sheet = book["results"]
    values = list(sheet.iter_rows(values_only=True))
    assert values[0] == ("agent", "overall_score", "start_time", "team")
    # The exact text, never a formula (xlsxwriter stores CR as OOXML's _x000D_ escape, which
    # Excel decodes and openpyxl leaves as it is).
    assert [r[0].replace("_x000D_", "\r") for r in values[1:]] == HOSTILE
    for cell in sheet["A"][1:]:
        assert cell.data_type == "s"
    assert {r[1] for r in values[1:]} == {-2.5}
    assert {r[2] for r in values[1:]} == {started.replace(tzinfo=None)}
    assert xlsx_file.content_type.startswith("application/vnd.openxmlformats")


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_files_split_by_rows_and_name_their_parts(tmp_path: Path, fmt: str) -> None:
    rows: list[list[object]] = [[f"a{i}", i, None, "t"] for i in range(2500)]
    files = _write(tmp_path, fmt, 1000, rows)
    assert [f.rows for f in files] == [1000, 1000, 500]
    assert [f.name for f in files] == [f"rep-part-00{i}-of-003.{fmt}" for i in (1, 2, 3)]
    assert all(f.path.is_file() and f.path.stat().st_size == f.bytes for f in files)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_no_rows_is_one_file_with_the_header(tmp_path: Path, fmt: str) -> None:
    (only,) = _write(tmp_path, fmt, 1000, [])
    assert (only.name, only.rows) == (f"rep.{fmt}", 0)
    if fmt == "csv":
        assert only.path.read_text(encoding="utf-8").splitlines() == [
            "agent,overall_score,start_time,team"
        ]
    else:
        rows = list(openpyxl.load_workbook(only.path).active.iter_rows(values_only=True))
        assert rows == [("agent", "overall_score", "start_time", "team")]


def test_base_names_cannot_leave_the_folder() -> None:
    assert safe_base_name("../../etc/passwd") == "etc_passwd"
    assert safe_base_name("acme quality 2026-11-22") == "acme_quality_2026-11-22"
    assert safe_base_name("///") == "report"
