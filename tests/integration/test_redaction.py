"""Card numbers, e-mails and phone numbers never reach a topic or the case store unredacted.

A chat file (local connector) and a conversation pushed to the ingest API of tenant acme
(policy redact), and two chat files of tenant globex (policy hash), all holding a card number, an
e-mail address and a phone number, go through the running service (real Kafka, SQLite case
store); every record of every topic and every row of every table is then searched byte for byte
for the raw values. A dead-lettered API item keeps its raw input in the media store, and replay
reads it from there.

Tenants made through the API redact under the policy set with ``PATCH /v1/tenant``: hash, then
keep, applied to the next pushed conversation; another tenant's policy and a config-file
tenant's stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from api_support import OPERATOR_TOKEN, ApiClient, new_tenant
from confluent_kafka import Consumer
from support import TopicReader, connector, running, settings_for, unique_prefix

from connectors.local import LocalConfig
from streams.settings import TenantSettings
from streams.topics import Topics

pytestmark = pytest.mark.asyncio

CARD, EMAIL, PHONE = "4111 1111 1111 1111", "jane.doe@example.com", "+1 415 555 0132"
#: Every way a raw value could be written down in a record or a row.
RAW = [
    CARD,
    "4111111111111111",
    "4111-1111",
    EMAIL,
    "jane.doe",
    PHONE,
    "415 555 0132",
    "4155550132",
]


def turns(time_key: str) -> list[dict[str, Any]]:
    return [
        {"speaker": "agent", time_key: "2026-11-20T09:00:05Z", "text": "Hello, how can I help?"},
        {
            "speaker": "customer",
            time_key: "2026-11-20T09:00:40Z",
            "text": f"Please charge my card {CARD}. Mail the receipt to {EMAIL}.",
        },
        {"speaker": "customer", "text": f"Or call me back on {PHONE} if it fails."},
    ]


def raw_records(kafka: str, topics: list[str]) -> list[bytes]:
    """Every key and value on ``topics``, undecoded."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    found: list[bytes] = []
    quiet_until = time.monotonic() + 5
    try:
        while time.monotonic() < quiet_until:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    found.extend(part for part in (msg.key(), msg.value()) if part)
                    quiet_until = time.monotonic() + 3
    finally:
        consumer.close()
    return found


def database_cells(db: Path) -> tuple[dict[str, int], list[bytes]]:
    """Rows per table and every cell of every table of the SQLite database, as bytes."""
    conn = sqlite3.connect(db)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows: dict[str, int] = {}
        cells: list[bytes] = []
        for name in names:
            table = conn.execute(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608 - own tables
            rows[name] = len(table)
            for row in table:
                for cell in row:
                    if isinstance(cell, bytes | bytearray | memoryview):
                        cells.append(bytes(cell))
                    elif cell is not None:
                        cells.append(str(cell).encode())
        return rows, cells
    finally:
        conn.close()


async def _until(client: ApiClient, path: str, timeout: float = 60) -> list[dict[str, Any]]:
    """GET ``path`` until it lists an item; return the items."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get(path)
        if reply.status == 200 and reply.body["items"]:
            return list(reply.body["items"])
        assert time.monotonic() < deadline, f"{path}: {reply.status} {reply.text[:2000]}"
        await asyncio.sleep(0.3)


def leaks(blobs: list[bytes]) -> list[str]:
    return sorted({raw for raw in RAW for blob in blobs if raw.encode() in blob})


async def test_chat_files_and_api_conversations_reach_topics_and_store_redacted(
    kafka: str, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    inbox = tmp_path / "inbox"
    drop = connector("drop", LocalConfig(root=inbox, create=True), cleanup="keep")
    hashing = connector("hashed", LocalConfig(root=tmp_path / "globex", create=True))
    tenants = [
        TenantSettings(id="acme", connectors=[drop]),
        TenantSettings(id="globex", connectors=[hashing], redaction={"policy": "hash"}),
    ]
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [drop],
        api={"operator_token": OPERATOR_TOKEN},
        tenants=tenants,
    )
    t = Topics(prefix)
    conversations = TopicReader(kafka, t.conversations, "callstream.Conversation")
    results = TopicReader(kafka, t.analysis_results, "callstream.AnalysisResult")
    try:
        async with running(settings) as service, ApiClient(service.http_url or "") as client:
            made = await client.as_(OPERATOR_TOKEN).post("/v1/tenants/acme/keys", {"name": "t"})
            assert made.status == 201, made.text
            chat = {"external_interaction_id": "CHAT-PII", "turns": turns("time")}
            (inbox / "CHAT-PII.json").write_text(json.dumps(chat))
            for ext in ("HASH-1", "HASH-2"):  # globex hashes: one value, one placeholder
                doc = {"external_interaction_id": ext, "turns": turns("time")}
                (tmp_path / "globex" / f"{ext}.json").write_text(json.dumps(doc))
            item = {
                "external_interaction_id": "API-PII",
                "channel": "chat",
                "started_at": "2026-11-20T09:00:00Z",
                "turns": turns("at"),
            }
            bad = {**item, "external_interaction_id": "API-BAD", "started_at": "yesterday"}
            me = client.as_(made.body["key"])
            reply = await me.post("/v1/conversations", {"items": [item, bad]})
            assert reply.status == 202, reply.text
            assert (reply.body["accepted"], reply.body["rejected"]) == (1, 1), reply.body
            ids = {"CHAT-PII", "API-PII", "HASH-1", "HASH-2"}
            await results.wait_for(lambda rs: {r["external_interaction_id"] for r in rs} >= ids, 90)
            await conversations.wait_for(lambda rs: len(rs) >= 4, 30)
            # the dead item's raw input went to the media store: replay still reads it (and
            # judges it again: still a bad timestamp), where "not kept" would be not_replayable
            letters = await _until(me, "/v1/dead-letters")
            [letter] = letters
            assert letter["reason"] == "bad_timestamp", letter
            again = await me.post("/v1/dead-letters/replay", {"ids": [letter["id"]]})
            assert again.status == 200, again.text
            assert again.body["items"][0]["outcome"] == "failed", again.body
            assert again.body["items"][0]["reason"] == "bad_timestamp", again.body
        topic_blobs = raw_records(kafka, t.all())
    finally:
        conversations.close()
        results.close()

    by_id = {r["external_interaction_id"]: r for r in results.records}
    for ext in ids:
        assert by_id[ext]["redactions"] == {"card": 1, "email": 1, "phone": 1}, by_id[ext]
        assert sum(by_id[ext]["redactions"].values()) == 3
    hashed = [c for c in conversations.records if c["tenant"] == "globex"]
    assert len(hashed) == 2
    first, second = ([turn["text"] for turn in c["turns"]] for c in hashed)
    assert first == second, (first, second)
    assert re.fullmatch(
        r"Please charge my card \[CARD:[0-9a-f]{12}\]\. "
        r"Mail the receipt to \[EMAIL:[0-9a-f]{12}\]\.",
        first[1],
    ), first
    assert re.fullmatch(r"Or call me back on \[PHONE:[0-9a-f]{12}\] if it fails\.", first[2])
    for conv in conversations.records:
        if conv["tenant"] == "globex":
            continue
        texts = [turn["text"] for turn in conv["turns"]]
        assert texts[1] == "Please charge my card [CARD]. Mail the receipt to [EMAIL].", texts
        assert texts[2] == "Or call me back on [PHONE] if it fails.", texts
        assert conv["redactions"] == {"card": 1, "email": 1, "phone": 1}

    assert len(topic_blobs) >= 12  # conversations, cases and results of the four at least
    assert b"[CARD]" in b"".join(topic_blobs)
    assert leaks(topic_blobs) == []

    rows, cells = database_cells(tmp_path / "data" / "callstream.db")
    assert rows["cases"] == 4 and rows["case_versions"] == 4, rows
    assert rows["dead_letters"] == 1, rows
    assert any(b"[CARD]" in cell for cell in cells)  # the stored conversation, redacted
    assert leaks(cells) == []
    media = [p.read_bytes() for p in (tmp_path / "data").rglob("*.raw")]
    assert len(media) == 1 and CARD.encode() in media[0]  # kept for replay, off Kafka and the DB


def pushed(ext: str) -> dict[str, Any]:
    """A chat conversation holding a card number, an e-mail address and a phone number."""
    return {
        "external_interaction_id": ext,
        "channel": "chat",
        "started_at": "2026-11-20T09:00:00Z",
        "turns": turns("at"),
    }


async def push(client: ApiClient, ext: str) -> str:
    """Push one conversation through the ingest API; return its case id."""
    reply = await client.post("/v1/conversations", {"items": [pushed(ext)]})
    assert reply.status == 202 and reply.body["accepted"] == 1, reply.text
    return str(reply.body["items"][0]["case_id"])


async def stored_turns(client: ApiClient, case_id: str) -> tuple[list[str], dict[str, int]]:
    """The turn texts and redaction counts of a case as the case store holds it."""
    deadline = time.monotonic() + 60
    while True:
        case = await client.get(f"/v1/cases/{case_id}")
        if case.status == 200:
            conv = case.body["conversation"]
            return [t["text"] for t in conv["turns"]], conv["redactions"]
        assert time.monotonic() < deadline, case.text
        await asyncio.sleep(0.3)


async def test_an_api_tenants_policy_set_through_the_api_applies_to_its_next_conversations(
    kafka: str, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    settings = settings_for(
        kafka,
        prefix,
        tmp_path / "data",
        [],
        api={"operator_token": OPERATOR_TOKEN},
        tenants=[TenantSettings(id="acme", redaction={"policy": "keep"})],
    )
    t = Topics(prefix)
    conversations = TopicReader(kafka, t.conversations, "callstream.Conversation")
    results = TopicReader(kafka, t.analysis_results, "callstream.AnalysisResult")
    try:
        async with running(settings) as service, ApiClient(service.http_url or "") as client:
            operator = client.as_(OPERATOR_TOKEN)
            initech = client.as_(await new_tenant(operator, "initech"))
            hooli = client.as_(await new_tenant(operator, "hooli"))
            default = {"policy": "redact", "default_region": "US"}
            assert (await initech.get("/v1/tenant")).body["redaction"] == default

            changed = await initech.patch("/v1/tenant", {"redaction": {"policy": "hash"}})
            assert changed.status == 200, changed.text
            assert changed.body["redaction"] == {"policy": "hash", "default_region": "US"}
            bad = await initech.patch("/v1/tenant", {"redaction": {"policy": "scramble"}})
            assert bad.status == 422 and bad.body["errors"][0]["field"] == "redaction.policy"
            # a tenant's key cannot reach another tenant's settings; the operator's can
            other = await initech.patch("/v1/tenants/hooli", {"redaction": {"policy": "keep"}})
            assert other.status == 401, other.text
            assert (await operator.get("/v1/tenants/hooli")).body["redaction"] == default
            # a config-file tenant's redaction is the config file's
            refused = await operator.patch("/v1/tenants/acme", {"redaction": {"policy": "hash"}})
            assert refused.status == 409, refused.text
            assert refused.body["errors"][0]["field"] == "redaction"
            assert "config file" in refused.body["detail"]
            acme = await operator.get("/v1/tenants/acme")
            assert acme.body["redaction"]["policy"] == "keep", acme.text
            doc = (await client.get("/v1/openapi.json")).body
            assert "redaction" in doc["components"]["schemas"]["Tenant"]["properties"]
            assert "redaction" in doc["components"]["schemas"]["TenantPatch"]["properties"]

            hashed_case = await push(initech, "API-HASH")
            hooli_case = await push(hooli, "HOOLI-1")
            hashed_text, hashed_counts = await stored_turns(initech, hashed_case)
            hooli_text, _ = await stored_turns(hooli, hooli_case)

            kept = await operator.patch("/v1/tenants/initech", {"redaction": {"policy": "keep"}})
            assert kept.status == 200 and kept.body["redaction"]["policy"] == "keep", kept.text
            kept_case = await push(initech, "API-KEEP")
            hooli_again = await push(hooli, "HOOLI-2")
            kept_text, kept_counts = await stored_turns(initech, kept_case)
            hooli_again_text, _ = await stored_turns(hooli, hooli_again)
            assert (await hooli.get("/v1/tenant")).body["redaction"] == default
            ids = {"API-HASH", "HOOLI-1", "API-KEEP", "HOOLI-2"}
            await results.wait_for(lambda rs: {r["external_interaction_id"] for r in rs} >= ids, 90)
            await conversations.wait_for(lambda rs: len(rs) >= 4, 30)
    finally:
        conversations.close()
        results.close()

    # hash: placeholders in the case store and on the topic, counted, no raw value
    assert re.fullmatch(
        r"Please charge my card \[CARD:[0-9a-f]{12}\]\. "
        r"Mail the receipt to \[EMAIL:[0-9a-f]{12}\]\.",
        hashed_text[1],
    ), hashed_text
    assert re.fullmatch(r"Or call me back on \[PHONE:[0-9a-f]{12}\] if it fails\.", hashed_text[2])
    assert hashed_counts == {"card": 1, "email": 1, "phone": 1}
    by_ext = {c["external_interaction_id"]: c for c in conversations.records}
    assert [turn["text"] for turn in by_ext["API-HASH"]["turns"]] == hashed_text
    assert leaks([json.dumps(by_ext["API-HASH"], default=str).encode()]) == []
    result_of = {r["external_interaction_id"]: r for r in results.records}
    assert result_of["API-HASH"]["redactions"] == {"card": 1, "email": 1, "phone": 1}
    # keep: the raw text, nothing counted
    assert kept_text == [turn["text"] for turn in turns("at")]
    assert CARD in kept_text[1] and EMAIL in kept_text[1] and PHONE in kept_text[2]
    assert kept_counts == {} and result_of["API-KEEP"]["redactions"] == {}
    assert [turn["text"] for turn in by_ext["API-KEEP"]["turns"]] == kept_text
    # the other tenant kept the default policy throughout
    for text in (hooli_text, hooli_again_text):
        assert text[1:] == [
            "Please charge my card [CARD]. Mail the receipt to [EMAIL].",
            "Or call me back on [PHONE] if it fails.",
        ]
    assert result_of["HOOLI-2"]["redactions"] == {"card": 1, "email": 1, "phone": 1}
