"""The canonical JSON a case's content hash is taken of never changes form.

Stored cases keep the hash of this text; if its form drifted (key order, separators, how a
datetime or a non-ASCII character is written), a re-upload after an upgrade would hash
differently and open a new version instead of being absorbed as a duplicate.
"""

from __future__ import annotations

import datetime as dt

import pytest

from streams.cases.store import content_hash, content_json

CONVERSATION = {
    "tenant": "acme",
    "source_system": "crm",
    "external_interaction_id": "CALL-ü1",
    "channel": "voice",
    "direction": None,
    "started_at": dt.datetime(2026, 11, 20, 9, 0, 0, 123000, tzinfo=dt.UTC),
    "ended_at": dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    "agent_id": "a-1",
    "turns": [
        {
            "speaker": "agent",
            "text": 'Grüß dich "quoted"',
            "start_seconds": 1.5,
            "end_seconds": None,
        }
    ],
    "metadata": {"z": "1", "a": "2"},
    "duration_ms": None,  # added later: left out while unset
    "recording": None,  # likewise
    "redactions": {"card": 1},
    "source": {"file_id": "f", "row": 3, "announced_at": dt.datetime(2026, 11, 20, tzinfo=dt.UTC)},
}

#: The text written by every release so far (computed before the encoder was changed to pass
#: datetimes through ``json.dumps``' ``default`` instead of converting the whole record first).
CANONICAL = (
    '{"agent_id":"a-1","channel":"voice","direction":null,"ended_at":"2026-11-20T10:00:00+01:00",'
    '"external_interaction_id":"CALL-\\u00fc1","metadata":{"a":"2","z":"1"},'
    '"redactions":{"card":1},"source_system":"crm","started_at":"2026-11-20T09:00:00.123000+00:00",'
    '"tenant":"acme","turns":[{"end_seconds":null,"speaker":"agent","start_seconds":1.5,'
    '"text":"Gr\\u00fc\\u00df dich \\"quoted\\""}]}'
)


def test_the_canonical_json_keeps_its_form() -> None:
    assert content_json(CONVERSATION) == CANONICAL


def test_where_and_when_it_was_read_does_not_change_the_hash() -> None:
    moved = {**CONVERSATION, "source": {"file_id": "g", "row": 9}}
    assert content_hash(content_json(moved)) == content_hash(CANONICAL)


def test_a_value_json_has_no_form_for_is_refused() -> None:
    with pytest.raises(TypeError, match="bytes"):
        content_json({**CONVERSATION, "agent_id": b"raw"})
