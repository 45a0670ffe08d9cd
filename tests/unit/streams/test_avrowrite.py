"""The compiled Avro writer writes fastavro's bytes and refuses what the strict checker refuses."""

from __future__ import annotations

import datetime as dt
import io
import random
from typing import Any

import fastavro
import pytest

from streams.avrowrite import FrozenRecord, Unfit, compile_writer
from streams.codec import AvroCodec
from streams.errors import SchemaError

CODEC = AvroCodec()


def _value(schema: Any, rnd: random.Random, depth: int = 0) -> Any:
    """A random valid value of a fastavro-parsed schema."""
    if isinstance(schema, str):
        if schema in CODEC._named:
            return _value(CODEC._named[schema], rnd, depth)
        return {
            "null": None,
            "boolean": rnd.random() < 0.5,
            "int": rnd.randint(-(2**31), 2**31 - 1),
            "long": rnd.choice(
                [0, 1, -1, 63, 64, -65, 2**63 - 1, -(2**63), rnd.randint(-9, 10**12)]
            ),
            "float": rnd.uniform(-1e6, 1e6),
            "double": rnd.choice([0.0, 1.5, -2, rnd.uniform(-1e300, 1e300)]),
            "string": rnd.choice(["", "x" * rnd.randint(0, 200), "héllo ☎", "\t\n"]),
            "bytes": bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 70))),
        }[schema]
    if isinstance(schema, list):
        if "null" in schema and (depth > 3 or rnd.random() < 0.3):
            return None
        return _value(rnd.choice([s for s in schema if s != "null"]), rnd, depth)
    logical = schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        if rnd.random() < 0.3:
            return rnd.randint(-(10**15), 10**15)
        zone = dt.timezone(dt.timedelta(minutes=rnd.randint(-720, 720)))
        micros = rnd.randint(-(10**16), 10**17)
        stamp = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
        return stamp.astimezone(zone)
    t = schema["type"]
    if t == "record":
        record = {}
        for f in schema["fields"]:
            if "default" in f and rnd.random() < 0.2:
                continue  # left out: its default is written
            record[f["name"]] = _value(f["type"], rnd, depth + 1)
        return record
    if t == "enum":
        return rnd.choice(schema["symbols"])
    if t == "array":
        return [_value(schema["items"], rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    if t == "map":
        size = rnd.choice([0, 1, 3, 70])
        return {f"k{i}": _value(schema["values"], rnd, depth + 1) for i in range(size)}
    return _value(t, rnd, depth)


def test_schemas_with_other_unions_are_left_to_fastavro() -> None:
    assert compile_writer(["null", "string", "long"]) is None
    assert compile_writer(CODEC.schema("callstream.SourceRecord"), CODEC._named) is None
    assert compile_writer(CODEC.schema("callstream.Conversation"), CODEC._named) is not None


@pytest.mark.parametrize("name", [n for n in CODEC.names if n != "callstream.SourceRecord"])
def test_compiled_writers_write_fastavros_bytes(name: str) -> None:
    schema = CODEC.schema(name)
    writer = compile_writer(schema, CODEC._named)
    assert writer is not None
    rnd = random.Random(name)
    for _ in range(300):
        record = _value(schema, rnd)
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, schema, record, strict_allow_default=True)
        out = bytearray()
        writer(out, record)
        assert bytes(out) == expected.getvalue()
        assert CODEC.encode(name, record) == expected.getvalue()


def _conversation() -> dict[str, Any]:
    return {
        "tenant": "acme",
        "source_system": "crm",
        "external_interaction_id": "CALL-1",
        "channel": "voice",
        "started_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
        "turns": [],
        "metadata": {},
        "source": None,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"channel": "fax"},
        {"channel": 3},
        {"started_at": dt.datetime(2026, 11, 20, 9)},  # noqa: DTZ001 - naive on purpose
        {"started_at": 1.5},
        {"started_at": True},
        {"duration_ms": 2**63},
        {"duration_ms": True},
        {"agent_id": b"bytes"},
        {"agent_id": "\udcff"},  # not encodable
        {"metadata": {"k": 1}},
        {"metadata": {1: "v"}},
        {"turns": [{"speaker": "agent", "text": 1}]},
        {"turns": "nope"},
        {"source": {"file_id": "f"}},
        {"tenant": None},
    ],
)
def test_the_writer_refuses_what_the_checker_refuses(change: dict[str, Any]) -> None:
    writer = compile_writer(CODEC.schema("callstream.Conversation"), CODEC._named)
    assert writer is not None
    record = {**_conversation(), **change}
    with pytest.raises(Unfit):
        writer(bytearray(), record)
    with pytest.raises(SchemaError):  # the codec's slow path names the problem
        CODEC.encode("callstream.Conversation", record)


def test_a_missing_required_field_is_named() -> None:
    record = _conversation()
    del record["tenant"]
    with pytest.raises(SchemaError, match="tenant"):
        CODEC.encode("callstream.Conversation", record)


def test_a_record_that_refers_to_itself_writes_fastavros_bytes() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "label", "type": "string"},
                {"name": "weight", "type": "double", "default": 0.5},
                {"name": "next", "type": ["null", "Node"], "default": None},
            ],
        }
    )
    writer = compile_writer(schema, {"Node": schema})
    assert writer is not None
    chain: dict[str, Any] = {"label": "last"}
    for i in range(5):
        chain = {"label": f"n{i}", "weight": i, "next": chain}
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, schema, chain, strict_allow_default=True)
    out = bytearray()
    writer(out, chain)
    assert bytes(out) == expected.getvalue()
    with pytest.raises(Unfit):
        writer(bytearray(), {"label": "x", "next": {"label": 1}})  # a wrong type one level down


def _score(**changes: Any) -> dict[str, Any]:
    evidence = {"detail": "no agent turns", "turn_index": None, "speaker": None}
    evidence |= {"excerpt": None, "at_seconds": None}
    score = {"id": "greet", "name": "Greeting", "rule": "phrase_present", "weight": 1.0}
    score |= {"score": 0.0, "passed": True, "applicable": False, "evidence": [evidence]}
    return score | changes


def test_a_frozen_record_is_encoded_once_per_writer_with_the_bytes_of_a_plain_dict() -> None:
    name = "callstream.AnalysisResult"
    plain = _score()
    frozen = FrozenRecord(plain | {"evidence": (FrozenRecord(plain["evidence"][0]),)})
    result = {
        "idempotency_key": "k",
        "tenant": "acme",
        "case_id": "c",
        "case_version": 1,
        "external_interaction_id": "CALL-1",
        "result_version": 1,
        "profile_id": "default",
        "profile_version": 1,
        "overall_score": 0.0,
        "passed": False,
        "analysed_at": dt.datetime(2026, 11, 25, tzinfo=dt.UTC),
        "redactions": {},
        "voice": None,
        "transcript": None,
    }
    expected = CODEC.encode(name, result | {"parameters": [plain, plain]})
    assert frozen.avro is None
    assert CODEC.encode(name, result | {"parameters": [frozen, frozen]}) == expected
    kept = frozen.avro
    assert kept is not None and kept[1] == expected[expected.index(b"\x0agreet") :][: len(kept[1])]
    assert CODEC.encode(name, result | {"parameters": [frozen, frozen]}) == expected  # the kept
    assert AvroCodec().encode(name, result | {"parameters": [frozen]}) == CODEC.encode(
        name, result | {"parameters": [plain]}
    )  # another codec's writer encodes it anew


def test_a_frozen_record_gets_every_check_a_dict_gets() -> None:
    writer = compile_writer(
        CODEC.schema("callstream.AnalysisResult")["fields"][10]["type"], CODEC._named
    )
    assert writer is not None
    for bad in (
        _score(passed=1),
        _score(extra="x"),
        {k: v for k, v in _score().items() if k != "id"},
    ):
        frozen = FrozenRecord(bad)
        with pytest.raises(Unfit):
            writer(bytearray(), [frozen])
        assert frozen.avro is None  # nothing kept for a value that does not fit
    with pytest.raises(TypeError):
        FrozenRecord(_score()).update(score=1.0)
