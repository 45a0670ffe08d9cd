"""Card numbers, e-mails and phone numbers never reach a topic or the case store unredacted.

A chat file (local connector) and a conversation pushed to the ingest API of tenant acme
(policy redact), and two chat files of tenant globex (policy hash), all holding a card number, an
e-mail address and a phone number, go through the running service (real Kafka, SQLite case
store); every record of every topic and every row of every table is then searched byte for byte
for the raw values. A dead-lettered API item keeps its raw input in the media store, and replay
reads it from there.
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
from api_support import OPERATOR_TOKEN, ApiClient
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
