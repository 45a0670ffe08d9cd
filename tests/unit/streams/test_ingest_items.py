"""API items and chat files are judged by one set of rules; dead-letter ids; keyset cursors."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest

from streams.api.conversations import check_shape
from streams.api.problems import Unprocessable
from streams.cases.store import delivery_key
from streams.codec import AvroCodec
from streams.control.deadletters import row_of
from streams.control.ingest import Source, check_item
from streams.control.listing import before, cursor_key, page
from streams.deadletters import dead_letter_id
from streams.ingest.parse import ParseSettings, parse
from streams.redact import Redactors
from streams.topics import Topics

REDACTORS = Redactors({}, lambda purpose: b"k" * 32)

CODEC = AvroCodec()
SOURCE = Source("req_0123456789abcdef01234567", dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC))

DOC: dict[str, Any] = {
    "external_interaction_id": "CHAT-9",
    "channel": "chat",
    "started_at": "2026-11-20T09:00:00+01:00",
    "agent_id": "a-1",
    "turns": [
        {"speaker": "visitor", "at": "2026-11-20T08:00:05Z", "text": "hi"},
        {"speaker": "agent", "at": 1763625610, "text": "hello"},
    ],
}


def item(doc: dict[str, Any], tenant: str = "acme", limit: int = 1_000_000) -> Any:
    return check_item(doc, 0, "items.", tenant, SOURCE, CODEC, Topics(), limit, REDACTORS)


def as_file(doc: dict[str, Any]) -> Any:
    [row] = parse(io.BytesIO(json.dumps(doc).encode()), "x.json", ParseSettings())
    return row


def test_an_item_and_a_chat_file_become_the_same_conversation() -> None:
    checked = item(DOC)
    assert checked.errors == [] and checked.record is not None
    sent = CODEC.decode("callstream.Conversation", checked.record[2])
    from_file = as_file(DOC).conversation
    assert {k: v for k, v in sent.items() if k in from_file} == from_file
    assert sent["tenant"] == "acme" and sent["source_system"] == "default"
    assert sent["source"]["file_id"] == SOURCE.request_id and sent["source"]["row"] == 1
    assert checked.record[1] == b"acme/default/CHAT-9"


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"external_interaction_id": " "}, "missing_id", "external_interaction_id"),
        ({"external_interaction_id": "x" * 513}, "id_too_long", "external_interaction_id"),
        ({"channel": "fax"}, "invalid_value", "channel"),
        ({"started_at": "soon"}, "bad_timestamp", "started_at"),
        ({"ended_at": "2026-11-19T00:00:00Z"}, "end_before_start", "ended_at"),
        ({"turns": [{"speaker": "robot", "text": "x"}]}, "invalid_value", "turns"),
        ({"agent_name": "a\x07b"}, "control_character", None),
    ],
)
def test_items_and_files_are_rejected_for_the_same_reason(
    change: dict[str, Any], reason: str, field: str | None
) -> None:
    doc = {**DOC, **change}
    from_file = as_file(doc)
    assert from_file.error is not None and from_file.error.reason == reason
    checked = item(doc)
    [error] = checked.errors
    assert error.reason == reason
    assert error.field == (f"items.0.{field}" if field else "items.0")


def test_shape_errors_name_every_field() -> None:
    checked = item({**DOC, "agent_id": 7, "colour": "red", "turns": [{"speaker": "agent"}]})
    found = {(e.reason, e.field) for e in checked.errors}
    assert found == {
        ("invalid_type", "items.0.agent_id"),
        ("unknown_field", "items.0.colour"),
        ("missing_field", "items.0.turns.0.text"),
    }
    assert item([1, 2]).errors[0].field == "items.0"  # type: ignore[arg-type]
    assert item({**DOC, "k\x00": 1}).errors[0].field == "items.0.k?"


def test_the_tenant_is_the_callers() -> None:
    assert item({**DOC, "tenant": "acme"}).errors == []
    [error] = item({**DOC, "tenant": "globex"}).errors
    assert (error.reason, error.field) == ("tenant_mismatch", "items.0.tenant")


def test_the_record_limit_and_source_system_rules_apply() -> None:
    [error] = item(DOC, limit=600).errors
    assert error.reason == "record_too_large"
    [error] = item({**DOC, "source_system": "s" * 129}).errors
    assert (error.reason, error.field) == ("invalid_value", "items.0.source_system")
    checked = item({**DOC, "source_system": "genesys", "duration_ms": 10**30})
    assert checked.errors[0].reason == "schema_violation"


def test_batches_over_1000_items_are_refused_whole() -> None:
    check_shape({"items": [{}] * 1000})
    check_shape({"external_interaction_id": "x"})
    for body in ({"items": [{}] * 1001}, {"items": []}, {"items": {}}, [], {"items": [], "x": 1}):
        with pytest.raises(Unprocessable):
            check_shape(body)


def test_delivery_keys_tell_requests_from_files() -> None:
    assert delivery_key({"source": {"file_id": "req_ab", "row": 3}}) == "api:req_ab:3"
    assert delivery_key({"source": {"file_id": "f" * 32, "row": 3}}) == f"file:{'f' * 32}:3"
    assert delivery_key({"source": None}) is None


def dead(**changes: Any) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "connector": "crm",
        "file_id": "f1",
        "path": "a.csv",
        "row": 2,
        "stage": "validate",
        "reason": "bad_timestamp",
        "message": "m",
        "raw": b"x,y\n",
        "occurred_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        **changes,
    }


def test_dead_letter_ids_are_deterministic() -> None:
    first = dead_letter_id(dead())
    assert first == dead_letter_id(dead(message="other words", occurred_at=None))
    assert first.startswith("dl_") and len(first) == 27
    assert len({first, dead_letter_id(dead(row=3)), dead_letter_id(dead(raw=b"z\n"))}) == 3
    assert dead_letter_id(dead(row=None)) != dead_letter_id(dead(row=0))
    row = row_of(dead(excerpt="a\x00b"))
    assert row["id"] == dead_letter_id(dead(excerpt="a\x00b")) and row["excerpt"] == "a\ufffdb"


def test_keyset_pages_and_cursors() -> None:
    at = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
    rows = [(at, "c"), (at, "b"), (at - dt.timedelta(seconds=1), "z")]
    items, nxt = page(rows, 2, lambda r: r)
    assert items == rows[:2] and nxt == [at.isoformat(), "b"]
    assert page(rows[:2], 2, lambda r: r) == (rows[:2], None)
    assert cursor_key(nxt) == (at, "b")
    assert cursor_key(["2026-11-20T09:00:00", "b"]) == (at, "b")  # naive: UTC
    assert cursor_key(None) is None and before(1, 2, None) is None
    for bad in ([1, "b"], ["not a time", "b"]):
        with pytest.raises(ValueError):
            cursor_key(bad)
