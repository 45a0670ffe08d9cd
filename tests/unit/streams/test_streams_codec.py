"""AvroCodec: the schemas in avro/, strict validation, schemaless round trips."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from streams.codec import DEFAULT_SCHEMAS_DIR, AvroCodec
from streams.errors import SchemaError

ARRIVAL = "callstream.FileArrival"
OUTCOME = "callstream.FileOutcome"
WHEN = dt.datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


def arrival(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "file_id": "0123456789abcdef0123456789abcdef",
        "tenant": "acme",
        "connector": "sftp-daily",
        "store_type": "sftp",
        "store_uri": "sftp://acme@sftp.example.com:22/upload",
        "path": "recordings/2024/05/call-ü.wav",
        "size": 5_000_000_000,
        "mtime": WHEN,
        "checksum": None,
        "version": 2,
        "version_id": "fedcba9876543210fedcba9876543210",
        "announced_at": WHEN + dt.timedelta(seconds=7),
    }
    record.update(changes)
    return record


def outcome(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "file_id": "0123456789abcdef0123456789abcdef",
        "tenant": "acme",
        "connector": "sftp-daily",
        "path": "in/a.csv",
        "version_id": "fedcba9876543210fedcba9876543210",
        "outcome": "invalid",
        "rows_accepted": 0,
        "rows_rejected": 12,
        "rejected_by_reason": {"missing_header": 12},
        "reason": "bad_header",
        "decided_at": WHEN,
        "lines_read": 13,
        "records_by_change": {},
    }
    record.update(changes)
    return record


def schema_message(codec: AvroCodec, name: str, record: dict[str, Any]) -> str:
    with pytest.raises(SchemaError) as info:
        codec.encode(name, record)
    return str(info.value)


# -- loading ------------------------------------------------------------------------------------


def test_every_schema_file_is_loaded(codec: AvroCodec) -> None:
    expected = sorted(p.stem for p in DEFAULT_SCHEMAS_DIR.glob("*.avsc"))
    assert codec.names == expected
    assert {ARRIVAL, OUTCOME} <= set(codec.names)


def test_an_unknown_schema_name_is_a_schema_error(codec: AvroCodec) -> None:
    with pytest.raises(SchemaError, match=re.escape("callstream.Nope")):
        codec.encode("callstream.Nope", {})


def test_an_empty_folder_is_a_schema_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no schemas here")
    with pytest.raises(SchemaError, match=re.escape("no .avsc schemas")):
        AvroCodec(tmp_path)


def test_a_missing_folder_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        AvroCodec(tmp_path / "nope")


def test_a_file_name_other_than_the_full_schema_name_is_refused(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_SCHEMAS_DIR / f"{ARRIVAL}.avsc", tmp_path / "FileArrival.avsc")
    with pytest.raises(SchemaError) as info:
        AvroCodec(tmp_path)
    assert "FileArrival.avsc" in str(info.value)
    assert repr(ARRIVAL) in str(info.value)


def test_a_file_that_is_not_json_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "x.Broken.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match=re.escape("x.Broken.avsc")):
        AvroCodec(tmp_path)


def test_an_invalid_schema_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "x.Bad.avsc").write_text(json.dumps({"type": "record", "name": "Bad"}))
    with pytest.raises(SchemaError, match=re.escape("x.Bad.avsc")):
        AvroCodec(tmp_path)


def write_schema(folder: Path, schema: dict[str, Any]) -> None:
    full = f"{schema['namespace']}.{schema['name']}"
    (folder / f"{full}.avsc").write_text(json.dumps(schema))


def test_schemas_may_reference_each_other_in_any_file_order(tmp_path: Path) -> None:
    # 'a.Outer' sorts before 'z.Inner', which it uses
    write_schema(
        tmp_path,
        {
            "type": "record",
            "name": "Outer",
            "namespace": "a",
            "fields": [
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["x", "y"]}},
                {"name": "inner", "type": "z.Inner"},
            ],
        },
    )
    write_schema(
        tmp_path,
        {
            "type": "record",
            "name": "Inner",
            "namespace": "z",
            "fields": [{"name": "n", "type": "long"}],
        },
    )
    codec = AvroCodec(tmp_path)
    assert codec.names == ["a.Outer", "z.Inner"]
    record = {"kind": "y", "inner": {"n": 7}}
    assert codec.decode("a.Outer", codec.encode("a.Outer", record)) == record


def test_an_unresolvable_reference_is_refused_by_name(tmp_path: Path) -> None:
    write_schema(
        tmp_path,
        {
            "type": "record",
            "name": "Outer",
            "namespace": "a",
            "fields": [{"name": "inner", "type": "z.Missing"}],
        },
    )
    with pytest.raises(SchemaError) as info:
        AvroCodec(tmp_path)
    assert "a.Outer.avsc" in str(info.value)
    assert "z.Missing" in str(info.value)


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum", [None, '"9b2cf535f27731c974343645a3985328"'])
def test_file_arrival_round_trip(codec: AvroCodec, checksum: str | None) -> None:
    record = arrival(checksum=checksum)
    data = codec.encode(ARRIVAL, record)
    assert isinstance(data, bytes)
    assert codec.decode(ARRIVAL, data) == record


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"outcome": "processed", "rows_accepted": 1_000_000, "rows_rejected": 0, "reason": None},
        {"outcome": "partial", "rows_rejected": 3, "rejected_by_reason": {"unbalanced_quote": 3}},
        {"outcome": "incomplete", "reason": "truncated_row"},
    ],
)
def test_file_outcome_round_trip(codec: AvroCodec, changes: dict[str, Any]) -> None:
    record = outcome(**changes)
    assert codec.decode(OUTCOME, codec.encode(OUTCOME, record)) == record


def test_timestamps_decode_as_utc_datetimes(codec: AvroCodec) -> None:
    naive_ms = int(WHEN.timestamp() * 1000)
    decoded = codec.decode(ARRIVAL, codec.encode(ARRIVAL, arrival(mtime=naive_ms)))
    assert decoded["mtime"] == WHEN
    assert decoded["mtime"].tzinfo is not None


def test_encoding_is_schemaless_and_deterministic(codec: AvroCodec) -> None:
    data = codec.encode(OUTCOME, outcome())
    assert data == codec.encode(OUTCOME, outcome())
    assert b"Obj\x01" not in data  # no container header
    assert b"callstream.FileOutcome" not in data  # no embedded schema


def test_decoding_garbage_is_a_schema_error(codec: AvroCodec) -> None:
    for data in (b"", b"\x02", b"\x02a"):
        with pytest.raises(SchemaError, match=re.escape("decoding callstream.FileOutcome")):
            codec.decode(OUTCOME, data)


def test_a_timestamp_beyond_the_calendar_is_a_schema_error(codec: AvroCodec) -> None:
    """A record whose timestamp-millis is past year 9999 (a hostile or broken producer) is a
    schema error like any undecodable record, not an error a consumer would retry forever."""
    good = codec.encode(ARRIVAL, arrival())
    plain = json.loads(json.dumps(codec.schema(ARRIVAL)))
    for f in plain["fields"]:
        if f["name"] == "announced_at":
            f["type"] = "long"  # the same bytes, without the logical type
    data = fastavro_bytes(plain, {**codec.decode(ARRIVAL, good), "announced_at": 2**62})
    with pytest.raises(SchemaError, match=re.escape("decoding callstream.FileArrival")):
        codec.decode(ARRIVAL, data)


def test_mutated_records_decode_or_fail_with_a_schema_error(codec: AvroCodec) -> None:
    """Bytes a consumer reads may be anything: each mutation of a valid record decodes, or
    fails with SchemaError (which the consumers dead-letter), never with another error."""
    rnd = random.Random(7)
    good = codec.encode(ARRIVAL, arrival())
    refused = 0
    for _ in range(5000):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            at, how = rnd.randrange(len(data)), rnd.random()
            if how < 0.5:
                data[at] = rnd.randrange(256)
            elif how < 0.7:
                del data[at]
            else:  # continuation bytes: a long varint, a number out of every range
                data[at:at] = b"\xff" * rnd.randint(1, 9)
        try:
            codec.decode(ARRIVAL, bytes(data))
        except SchemaError:
            refused += 1
    assert refused > 1000  # the mutations did reach the error paths


def fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    import io

    import fastavro

    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


# -- strict validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "12"),
        ("size", 1.5),
        ("size", True),
        ("version", 2**31),
        ("version", None),
        ("path", b"in/a.csv"),
        ("path", None),
        ("checksum", 5),
        ("mtime", "2024-05-01T12:00:00Z"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(
    codec: AvroCodec, field: str, value: object
) -> None:
    message = schema_message(codec, ARRIVAL, arrival(**{field: value}))
    assert f"callstream.FileArrival.{field}" in message


def test_an_unknown_enum_symbol_is_refused_naming_the_field(codec: AvroCodec) -> None:
    message = schema_message(codec, OUTCOME, outcome(outcome="rejected"))
    assert "callstream.FileOutcome.outcome" in message


@pytest.mark.parametrize("field", ["size", "file_id", "announced_at"])
def test_a_missing_field_is_refused(codec: AvroCodec, field: str) -> None:
    record = arrival()
    del record[field]
    with pytest.raises(SchemaError):
        codec.encode(ARRIVAL, record)


def test_a_missing_field_error_names_the_field(codec: AvroCodec) -> None:
    record = arrival()
    del record["size"]
    message = schema_message(codec, ARRIVAL, record)
    assert "callstream.FileArrival.size" in message


@pytest.mark.parametrize(
    ("name", "record"),
    [
        (ARRIVAL, arrival(tenant_name="acme")),
        (OUTCOME, outcome(tenant_name="acme")),
    ],
)
def test_an_unknown_extra_field_is_refused_naming_the_field(
    codec: AvroCodec, name: str, record: dict[str, Any]
) -> None:
    message = schema_message(codec, name, record)
    assert "unknown field(s) tenant_name" in message


def test_several_unknown_fields_are_all_named(codec: AvroCodec) -> None:
    message = schema_message(codec, ARRIVAL, arrival(zeta=1, alpha=2))
    assert "alpha, zeta" in message


def test_validate_accepts_a_good_record(codec: AvroCodec) -> None:
    codec.validate(ARRIVAL, arrival())
    codec.validate(OUTCOME, outcome())


def test_a_record_that_fails_validation_is_not_encoded(codec: AvroCodec) -> None:
    with pytest.raises(SchemaError):
        codec.encode(ARRIVAL, arrival(size=-1.0))
