"""Source-type files: the name rule, value types, PII hashing and the header rule."""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import io

import pytest

from streams.control.sources import SourceField, SourceSchema
from streams.ingest.parse import FileRejected, ParseSettings, ParseStats, parse_delimited
from streams.ingest.sourcerows import (
    Misplaced,
    SourceFile,
    SourceShape,
    canonical,
    content_hash,
    hash_pii,
    source_file,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- names ---------------------------------------------------------------------------------------


def test_well_placed_files_are_read() -> None:
    assert source_file("sources/member/20200125_member.csv") == SourceFile(
        "member", dt.date(2020, 1, 25), "20200125_member.csv", "csv"
    )
    tsv = source_file("sources/loyalty_point/20201231_loyalty_point.TSV")
    assert isinstance(tsv, SourceFile)
    assert (tsv.source_type, tsv.fmt) == ("loyalty_point", "tsv")


@pytest.mark.parametrize(
    "path",
    ["calls/20200125_member.csv", "20200125_member.csv", "source/member/20200125_member.csv"],
)
def test_files_outside_the_sources_folder_are_not_source_files(path: str) -> None:
    assert source_file(path) is None


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("sources/20200125_member.csv", "not in a source type's folder"),
        ("sources/member/2020/20200125_member.csv", "not in a source type's folder"),
        ("sources/member/20201341_member.csv", "20201341 is not a date"),
        ("sources/member/20200230_member.csv", "20200230 is not a date"),
        ("sources/member/20200125_member.xlsx", "does not fit the name pattern"),
        ("sources/member/20200125_member.csv.bak", "does not fit the name pattern"),
        ("sources/member/2020125_member.csv", "does not fit the name pattern"),
        ("sources/member/20200125-member.csv", "does not fit the name pattern"),
        ("sources/member/20200125_Member.csv", "does not fit the name pattern"),
        ("sources/Member/20200125_Member.csv", "does not fit the name pattern"),
        ("sources/order/20200125_member.csv", "is a 'member' file in the 'order' folder"),
        ("sources/member/member.csv", "does not fit the name pattern"),
        ("sources/member/\u0662\u0660\u0662\u06600125_member.csv", "does not fit the name pattern"),
    ],
)
def test_misplaced_files_say_why(path: str, why: str) -> None:
    found = source_file(path)
    assert isinstance(found, Misplaced)
    assert why in found.message


def test_the_sources_folder_is_configurable() -> None:
    assert source_file("sources/member/20200125_member.csv", "crm") is None
    assert isinstance(source_file("crm/member/20200125_member.csv", "crm"), SourceFile)


# -- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("Integer", "12", "12"),
        ("Integer", " +0012 ", "12"),
        ("Integer", "-0", "0"),
        ("Integer", "9223372036854775807", "9223372036854775807"),
        ("Integer", "-9223372036854775808", "-9223372036854775808"),
        ("Decimal", "3.50", "3.5"),
        ("Decimal", "-0.000", "0"),
        ("Decimal", ".5", "0.5"),
        ("Decimal", "100", "100"),
        ("Decimal", "100.", "100"),
        (
            "Decimal",
            "12345678901234567890.123456789012345678",
            "12345678901234567890.123456789012345678",
        ),
        ("Date", "2020-01-25", "2020-01-25"),
        ("Date", "2020/01/25", "2020-01-25"),
        ("Date", "20200125", "2020-01-25"),
        ("Date", "2020-02-29", "2020-02-29"),
        ("DateTime", "2020-01-25T10:00:00Z", "2020-01-25T10:00:00Z"),
        ("DateTime", "2020-01-25 18:00:00+08:00", "2020-01-25T10:00:00Z"),
        ("DateTime", "2020-01-25T10:00:00", "2020-01-25T10:00:00Z"),
        ("DateTime", "1579946400", "2020-01-25T10:00:00Z"),
        ("Boolean", "TRUE", "true"),
        ("Boolean", "no", "false"),
        ("Boolean", "1", "true"),
        ("Boolean", " f ", "false"),
        ("String", "  as written  ", "  as written  "),
        ("String", "", None),
        ("Integer", "   ", None),
    ],
)
def test_values_take_their_canonical_form(kind: str, text: str, value: str | None) -> None:
    assert canonical(kind, text) == value


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("Integer", "1.0"),
        ("Integer", "1e3"),
        ("Integer", "1,000"),
        ("Integer", "0x10"),
        ("Integer", "9223372036854775808"),
        ("Integer", "\u0661\u0662"),  # Arabic-Indic digits: int() would take them
        ("Integer", "abc"),
        ("Decimal", "1e5"),
        ("Decimal", "NaN"),
        ("Decimal", "Infinity"),
        ("Decimal", "1.2.3"),
        ("Decimal", "."),
        ("Decimal", "1" * 39),
        ("Date", "2020-13-01"),
        ("Date", "2020-02-30"),
        ("Date", "2019-02-29"),
        ("Date", "25/01/2020"),
        ("Date", "2020-01/25"),
        ("Date", "2020-01-25T10:00:00"),
        ("Date", "\u0662\u0660\u0662\u0660-01-25"),  # Arabic-Indic digits
        ("DateTime", "yesterday"),
        ("DateTime", "2020-01-25T25:00:00"),
        ("DateTime", "99999999999999"),
        ("Boolean", "maybe"),
        ("Boolean", "2"),
    ],
)
def test_bad_values_are_refused(kind: str, text: str) -> None:
    with pytest.raises(ValueError, match=f"not a {kind}"):
        canonical(kind, text)


def test_naive_datetimes_take_the_connectors_zone() -> None:
    assert canonical("DateTime", "2020-01-25T18:00:00", "Asia/Singapore") == "2020-01-25T10:00:00Z"


# -- PII -----------------------------------------------------------------------------------------


def test_pii_strings_are_normalised_before_hashing() -> None:
    assert hash_pii("String", "  Ann@Example.COM ") == sha("ann@example.com")
    # NFC: "é" composed and decomposed hash alike
    assert hash_pii("String", "Ame\u0301lie") == hash_pii("String", "Am\u00e9lie")


def test_pii_of_other_types_hashes_the_canonical_value() -> None:
    assert hash_pii("Integer", canonical("Integer", "+0065123") or "") == sha("65123")
    assert hash_pii("Date", canonical("Date", "2020/01/25") or "") == sha("2020-01-25")


def test_content_hash_ignores_empty_fields() -> None:
    assert content_hash({"id": "1", "email": None}) == content_hash({"id": "1"})
    assert content_hash({"id": "1", "name": "a"}) != content_hash({"id": "1", "name": "b"})


# -- files ---------------------------------------------------------------------------------------

MEMBER = SourceSchema(
    source_type="member",
    source_name="Member",
    description="",
    version=2,
    schema=[
        SourceField(name="id", type="Integer", primary_key=True),
        SourceField(name="name", type="String"),
        SourceField(name="birthdate", type="Date"),
        SourceField(name="phone", type="String", pii=True),
        SourceField(name="vip", type="Boolean"),
    ],
    created_at=0,
    created_by="operator",
    updated_at=0,
    updated_by="operator",
)


def read(data: bytes, schema: SourceSchema = MEMBER, delimiter: str = ",") -> list:  # type: ignore[type-arg]
    stats = ParseStats()
    rows = parse_delimited(
        io.BytesIO(data), delimiter, ParseSettings(), SourceShape(schema), stats, allow_bom=False
    )
    return list(rows)


def test_rows_become_typed_records_with_hashed_pii() -> None:
    rows = read(b"id,name,birthdate,phone,vip\n7,Ann,1990-05-01, +65 9123 4567 ,yes\n8,Bob,,,\n")
    first, second = rows
    assert first.error is None
    assert first.conversation["key"] == "7"
    assert first.conversation["values"] == {
        "id": "7",
        "name": "Ann",
        "birthdate": "1990-05-01",
        "phone": sha("+65 9123 4567"),
        "vip": "true",
    }
    assert "9123" not in repr(first.conversation)
    assert second.conversation["values"]["phone"] is None


def test_the_header_may_list_the_fields_in_any_order() -> None:
    (row,) = read(b"phone\tvip\tid\tbirthdate\tname\n1\tn\t9\t2020-01-01\tCy\n", delimiter="\t")
    assert row.conversation["values"]["id"] == "9"
    assert row.conversation["values"]["vip"] == "false"


def test_a_bad_value_rejects_the_row_naming_the_column() -> None:
    rows = read(b"id,name,birthdate,phone,vip\n1,Ann,1990-13-01,1,y\n2,Bob,,,\n")
    assert rows[0].error is not None
    assert rows[0].error.reason == "invalid_value"
    assert rows[0].error.column == "birthdate"
    assert rows[0].error.message.startswith("Invalid data type in column [birthdate]")
    assert rows[1].error is None


def test_an_empty_key_rejects_the_row() -> None:
    (row,) = read(b"id,name,birthdate,phone,vip\n,Ann,,,\n")
    assert row.error is not None
    assert (row.error.reason, row.error.column) == ("missing_key", "id")


def test_composite_keys_are_json_arrays() -> None:
    schema = MEMBER.model_copy(
        update={
            "fields": [
                SourceField(name="store", type="String", primary_key=True),
                SourceField(name="day", type="Date", primary_key=True),
            ]
        }
    )
    (row,) = read(b"store,day\nS/1,2020/01/02\n", schema)
    assert row.conversation["key"] == '["S/1", "2020-01-02"]'


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"id,name,birthdate,phone", ["missing column(s) [vip]"]),
        (b"id,name,birthdate,phone,vip,email", ["unexpected column(s) [email]"]),
        (b"ID,name,birthdate,phone,vip", ["missing column(s) [id]", "unexpected column(s) [ID]"]),
        (b"id;name;birthdate;phone;vip", ["is the delimiter ',' right?"]),
    ],
)
def test_the_header_must_name_exactly_the_schemas_fields(header: bytes, words: list[str]) -> None:
    with pytest.raises(FileRejected) as info:
        read(header + b"\n1,a,,,\n")
    assert info.value.reason == "header_mismatch"
    for word in words:
        assert word in str(info.value)


def test_a_header_is_required() -> None:
    with pytest.raises(FileRejected) as info:
        read(b"")
    assert info.value.reason == "missing_header"


@pytest.mark.parametrize("bom", [codecs.BOM_UTF8, codecs.BOM_UTF16_LE])
def test_a_byte_order_mark_rejects_the_file(bom: bytes) -> None:
    with pytest.raises(FileRejected) as info:
        read(bom + b"id,name,birthdate,phone,vip\n1,a,,,\n")
    assert info.value.reason == "bom_not_allowed"
    assert "without BOM" in str(info.value)


def test_the_shared_parser_rules_still_apply() -> None:
    rows = read(b'id,name,birthdate,phone,vip\n1,"unclosed,,,\n2,\xff\xfe,,,\n3,a,,\n4,ok,,,\n')
    assert [r.error.reason if r.error else None for r in rows] == [
        "unbalanced_quote",
        "invalid_utf8",
        "wrong_column_count",
        None,
    ]


def test_pii_already_hashed_by_the_sender_is_kept() -> None:
    digest = sha("+65 9123 4567").upper()
    (row,) = read(b"id,name,birthdate,phone,vip\n1,Ann,,%s,\n" % digest.encode())
    assert row.conversation["values"]["phone"] == digest.lower()


def shape_with_header(delimiter: str = ",") -> SourceShape:
    shape = SourceShape(MEMBER)
    shape.header(["id", "name", "birthdate", "phone", "vip"], "", delimiter)
    return shape


def test_rejected_rows_are_redacted_for_dead_letters() -> None:
    shape = shape_with_header()
    raw = '2,"Bob, Jr",1990-13-01, +65 8000 1111 ,maybe\r\n'
    assert shape.redact(raw, ",") == (f'2,"Bob, Jr",1990-13-01,{sha("+65 8000 1111")},maybe\r\n')
    # a redacted row replays to the same record as the original would
    original = read(b"id,name,birthdate,phone,vip\n2,Bob,,+65 8000 1111,\n")[0]
    redacted = shape.redact("2,Bob,,+65 8000 1111,\n", ",") or ""
    replayed = read(b"id,name,birthdate,phone,vip\n" + redacted.encode())[0]
    assert replayed.conversation == original.conversation


@pytest.mark.parametrize("raw", ['1,"open,,,\n', "1,too,few\n", "1,a,b,c,d,e\n"])
def test_rows_that_do_not_line_up_keep_nothing(raw: str) -> None:
    assert shape_with_header().redact(raw, ",") is None


def test_schemas_without_pii_keep_the_raw_row() -> None:
    schema = MEMBER.model_copy(
        update={"fields": [SourceField(name="id", type="Integer", primary_key=True)]}
    )
    shape = SourceShape(schema)
    shape.header(["id"], "", ",")
    assert shape.redact('"x\n', ",") == '"x\n'
