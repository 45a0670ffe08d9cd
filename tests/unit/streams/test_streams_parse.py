"""The CSV/TSV and chat parser: every line accounted for, strict quoting, hostile text."""

from __future__ import annotations

import codecs
import datetime as dt
import io
import json
from typing import Any

import pytest

from streams.ingest.parse import (
    MAX_ID_CHARS,
    FileRejected,
    ParsedRow,
    ParseSettings,
    ParseStats,
    parse,
)

HEADER = "external_interaction_id,channel,started_at,ended_at,agent_id,team\n"


def row(i: int, team: str = "Billing") -> str:
    return f"CALL-{i:05d},voice,2026-11-20T09:00:00Z,2026-11-20T09:05:00Z,a-{i},{team}\n"


def csv_of(count: int, **changes: str) -> str:
    lines = [row(i) for i in range(count)]
    for index, text in changes.items():
        lines[int(index)] = text
    return HEADER + "".join(lines)


def run(
    data: bytes | str, name: str = "x.csv", **settings: Any
) -> tuple[list[ParsedRow], ParseStats]:
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    stats = ParseStats()
    return list(parse(io.BytesIO(raw), name, ParseSettings(**settings), stats)), stats


def accepted(rows: list[ParsedRow]) -> list[str]:
    return [r.conversation["external_interaction_id"] for r in rows if r.conversation]


def rejected(rows: list[ParsedRow]) -> list[tuple[int, str]]:
    return [(r.line, r.error.reason) for r in rows if r.error]


def assert_every_line_accounted(rows: list[ParsedRow], stats: ParseStats) -> None:
    """Header + blank lines + the lines of every row == the lines read, none counted twice."""
    covered: list[int] = []
    for r in rows:
        if r.error is not None and r.error.reason == "unbalanced_quote" and r.end_line == r.line:
            covered.append(r.line)
        else:
            covered.extend(range(r.line, r.end_line + 1))
    assert len(covered) == len(set(covered)), "a line belongs to two rows"
    assert stats.header_lines + stats.blank_lines + len(covered) == stats.lines_read


def test_a_stray_quote_rejects_its_line_and_the_rest_of_the_file_flows() -> None:
    # Row 11 opens a quote that never closes: today's csv(strict=False) swallowed 989 rows.
    data = csv_of(1000, **{"10": row(10, team='"Billing')})
    rows, stats = run(data)
    assert len(accepted(rows)) == 999
    assert rejected(rows) == [(12, "unbalanced_quote")]
    bad = next(r for r in rows if r.error)
    assert "line 12" in bad.error.message
    assert bad.raw == row(10, team='"Billing')
    assert_every_line_accounted(rows, stats)


def test_a_stray_quote_that_closes_later_still_loses_only_its_line() -> None:
    lines = {"10": row(10, team='"Billing'), "20": row(20, team='Bill"ing"')}
    rows, stats = run(csv_of(100, **lines))
    assert rejected(rows)[0] == (12, "unbalanced_quote")
    assert len(accepted(rows)) + len(rejected(rows)) >= 99
    assert "CALL-00099" in accepted(rows)
    assert_every_line_accounted(rows, stats)


def test_quoted_newlines_inside_a_field_are_one_row() -> None:
    rows, stats = run(csv_of(3, **{"1": row(1, team='"Bill\ning"')}))
    assert accepted(rows) == ["CALL-00000", "CALL-00001", "CALL-00002"]
    assert rows[1].line == 3 and rows[1].end_line == 4
    assert rows[1].conversation["team"] == "Bill\ning"
    assert_every_line_accounted(rows, stats)


def test_a_quoted_field_longer_than_max_row_lines_is_unbalanced() -> None:
    field = '"' + "x\n" * 5 + '"'
    rows, stats = run(csv_of(3, **{"1": row(1, team=field)}), max_row_lines=3)
    assert rejected(rows)[0] == (3, "unbalanced_quote")
    assert "CALL-00002" in accepted(rows)
    assert_every_line_accounted(rows, stats)


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        ("CALL-9,voice,2026-11", "truncated_row"),
        ('CALL-9,voice,"2026-11', "truncated_row"),
        ('CALL-9,voice,"2026\n-11', "truncated_row"),
    ],
)
def test_an_unterminated_incomplete_last_line_is_flagged_truncated(tail: str, reason: str) -> None:
    rows, stats = run(csv_of(5) + tail)
    assert len(accepted(rows)) == 5
    assert rejected(rows) == [(7, reason)]
    assert rows[-1].truncated
    assert_every_line_accounted(rows, stats)


def test_an_unterminated_complete_last_line_is_accepted() -> None:
    rows, _ = run(csv_of(5).rstrip("\n"))
    assert len(accepted(rows)) == 5 and not rejected(rows)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x0b"])
def test_control_characters_are_rejected_per_row_naming_the_column(char: str) -> None:
    rows, stats = run(csv_of(5, **{"2": row(2, team=f"Bil{char}ling")}))
    assert rejected(rows) == [(4, "control_character")]
    bad = next(r for r in rows if r.error)
    assert bad.error.column == "team"
    assert len(accepted(rows)) == 4
    assert_every_line_accounted(rows, stats)


def test_tabs_and_carriage_returns_in_fields_are_fine() -> None:
    rows, _ = run(csv_of(2, **{"1": row(1, team='"Bill\ting\r\nTeam"')}))
    assert len(accepted(rows)) == 2


def test_an_id_longer_than_the_case_column_is_rejected() -> None:
    long_id = "X" * (MAX_ID_CHARS + 1)
    rows, _ = run(csv_of(3, **{"1": row(1).replace("CALL-00001", long_id)}))
    assert rejected(rows) == [(3, "id_too_long")]
    assert len(accepted(rows)) == 2


def test_invalid_utf8_is_rejected_per_row() -> None:
    data = csv_of(3, **{"1": row(1, team="\udcff\udcfe")})
    rows, _ = run(data)
    assert rejected(rows) == [(3, "invalid_utf8")]


def test_a_line_longer_than_the_row_limit_is_spooled_not_held() -> None:
    huge = "CALL-1,voice," + "x" * 3_000_000 + "\n"
    rows, stats = run(HEADER + huge + row(2), max_row_bytes=100_000, max_field_bytes=50_000)
    assert rejected(rows) == [(2, "row_too_large")]
    bad = next(r for r in rows if r.error)
    assert bad.raw == "" and bad.raw_spool is not None
    with bad.raw_spool as spool:
        assert len(spool.read()) == len(huge)
    assert accepted(rows) == ["CALL-00002"]
    assert_every_line_accounted(rows, stats)


def test_a_field_over_the_field_limit_is_rejected() -> None:
    rows, _ = run(csv_of(2, **{"0": row(0, team="y" * 5000)}), max_field_bytes=1024)
    assert rejected(rows) == [(2, "field_too_large")]


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_any_line_ending_works(ending: str) -> None:
    rows, _ = run(csv_of(3).replace("\n", ending))
    assert len(accepted(rows)) == 3


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_byte_order_marks_choose_the_encoding(encoding: str) -> None:
    rows, _ = run(csv_of(3, **{"1": row(1, team="Équipe")}).encode(encoding))
    assert len(accepted(rows)) == 3
    assert rows[1].conversation["team"] == "Équipe"


def test_utf16_without_a_bom_is_refused_with_a_hint() -> None:
    with pytest.raises(FileRejected) as info:
        run(csv_of(2).encode("utf-16-le"))
    assert info.value.reason == "unsupported_encoding"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "missing_header"),
        (HEADER.replace(",", ";") + "a;b\n", "missing_header"),
        (HEADER.replace("team", "agent_id"), "duplicate_header"),
        (bytes(range(256)) * 4, "unsupported_encoding"),
        ('"external_interaction_id,channel\nX,voice\n', "missing_header"),
    ],
)
def test_unusable_files_are_rejected_whole(data: bytes | str, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        run(data)
    assert info.value.reason == reason


def test_too_many_columns_is_rejected() -> None:
    header = "call_id," + ",".join(f"c{i}" for i in range(200)) + "\n"
    with pytest.raises(FileRejected) as info:
        run(header, max_columns=100)
    assert info.value.reason == "too_many_columns"


def test_header_only_and_blank_lines_are_accounted_for() -> None:
    rows, stats = run(HEADER + "\n\n" + row(1) + "\n")
    assert accepted(rows) == ["CALL-00001"]
    assert stats.blank_lines == 3
    assert_every_line_accounted(rows, stats)


def test_unnamed_columns_keep_their_values_in_metadata() -> None:
    rows, _ = run(HEADER.rstrip("\n") + ",\n" + row(1).rstrip("\n") + ",kept\n")
    assert rows[0].conversation["metadata"] == {"column_7": "kept"}


def test_wrong_column_counts_are_rejected() -> None:
    rows, _ = run(csv_of(3, **{"0": "CALL-1,voice\n", "1": row(1).rstrip("\n") + ",extra\n"}))
    assert rejected(rows) == [(2, "wrong_column_count"), (3, "wrong_column_count")]


# -- chat transcripts ----------------------------------------------------------------------------

CHAT = {
    "external_interaction_id": "CHAT-1",
    "turns": [
        {"speaker": "customer", "time": "2026-11-20T09:00:00Z", "text": "hello"},
        {"speaker": "agent", "time": "2026-11-20T09:00:20Z", "text": "hi, how can I help"},
    ],
}


def chat(doc: Any) -> list[ParsedRow]:
    rows, _ = run(json.dumps(doc).encode(), "c.json")
    return rows


def test_a_chat_becomes_one_conversation_with_turns() -> None:
    (parsed,) = chat(CHAT)
    assert parsed.conversation["external_interaction_id"] == "CHAT-1"
    assert len(parsed.conversation["turns"]) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nesting_too_deep"),
        (b'{"x": ' + b"1" * 5000 + b"}", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b'"a string"', "invalid_json"),
        (b"\xff\xfe\x00garbage\x81", "invalid_utf8"),
    ],
)
def test_hostile_json_is_rejected_whole(data: bytes, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        run(data, "c.json")
    assert info.value.reason == reason


def test_a_transcript_over_the_document_limit_is_rejected() -> None:
    doc = {**CHAT, "turns": CHAT["turns"] * 2000}
    with pytest.raises(FileRejected) as info:
        run(json.dumps(doc).encode(), "c.json", max_document_bytes=10_000)
    assert info.value.reason == "too_large"


def test_too_many_turns_is_a_row_error() -> None:
    (parsed,) = chat({**CHAT, "turns": CHAT["turns"] * 10})
    assert parsed.conversation is not None
    rows, _ = run(json.dumps({**CHAT, "turns": CHAT["turns"] * 10}).encode(), "c.json", max_turns=5)
    assert rows[0].error.reason == "too_many_turns"


def test_control_characters_in_a_chat_are_rejected() -> None:
    doc = {**CHAT, "turns": [{"speaker": "agent", "text": "nul\x00here"}]}
    (parsed,) = chat(doc)
    assert parsed.error.reason == "control_character"


def test_nested_metadata_is_kept_as_json_not_dropped() -> None:
    (parsed,) = chat({**CHAT, "crm": {"account": 7, "tags": ["vip"]}})
    assert json.loads(parsed.conversation["metadata"]["crm"]) == {"account": 7, "tags": ["vip"]}


def test_a_utf16_chat_with_a_bom_is_read() -> None:
    rows, _ = run(codecs.BOM_UTF16_LE + json.dumps(CHAT).encode("utf-16-le"), "c.json")
    assert rows[0].conversation is not None


@pytest.mark.parametrize("zone", ["Europe/Londres", "../etc/passwd", ""])
def test_an_unknown_time_zone_is_refused_with_its_name(zone: str) -> None:
    with pytest.raises(ValueError, match=f"unknown time zone {zone!r}"):
        ParseSettings(timezone=zone)


def test_a_naive_timestamp_is_read_in_the_configured_zone() -> None:
    data = HEADER + "CALL-1,voice,2026-11-20 09:00:00,2026-11-20 09:05:00,a-1,Billing\n"
    rows, _ = run(data, timezone="Asia/Kolkata")
    assert rows[0].conversation is not None
    assert rows[0].conversation["started_at"] == dt.datetime(2026, 11, 20, 3, 30, tzinfo=dt.UTC)
