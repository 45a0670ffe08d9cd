"""Platform Kafka connector against a second real broker (the platform's cluster, SASL/SCRAM).

Events on the platform's topic become cases; their results come back on the platform's feedback
topic keyed by the platform's conversation id with the idempotency key in a header; bad events
are dead-lettered with a reason and the events after them still flow; the platform group's
offsets are committed; a wrong password stops the start with an error naming the connector.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import wave
from pathlib import Path
from typing import Any

import fastavro
import pytest
from platform_support import (
    FeedbackReader,
    committed,
    event,
    platform_connector,
    platform_settings,
    platform_topics,
    produce,
)
from servers.recordings import RecordingServer
from sqlalchemy import select
from support import TopicReader, running, topics

from streams.cases.store import case_id, cases
from streams.embedded.kafka import LocalKafka
from streams.errors import ConfigError
from streams.service import Service

DEAD_LETTER = "callstream.DeadLetter"


async def test_events_become_cases_and_results_return_with_keys_and_header(
    kafka: str, platform_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    events_topic, feedback_topic = f"{prefix}.events", f"{prefix}.feedback"
    platform_topics(platform_kafka, events_topic, feedback_topic)
    conn = platform_connector(platform_kafka, "plat", events_topic, feedback_topic)
    settings = platform_settings(kafka, prefix, tmp_path / "data", [conn])
    bad = [
        b'{"conversationId": "P-bad", "start_time": ',  # cut short
        json.dumps(event(900, tenant="globex")).encode(),  # another tenant's
        json.dumps(event(901, start_time=None, end_time=None, turns=[])).encode(),  # no start
        b"[1, 2, 3]",
    ]
    good = [json.dumps(event(i)).encode() for i in range(30)]
    # each bad event sits between good ones on the same partition (same key)
    values = [(b"k", v) for v in good[:10]]
    for i, b in enumerate(bad):
        values += [(b"k", b), (b"k", good[10 + i])]
    values += [(f"k{i}".encode(), v) for i, v in enumerate(good[14:])]
    feedback = FeedbackReader(platform_kafka, feedback_topic)
    dead = TopicReader(kafka, topics(prefix).dead_letter, DEAD_LETTER)
    try:
        async with running(settings) as service:
            produce(platform_kafka, events_topic, values)
            await feedback.wait_for(lambda rs: len({r[0] for r in rs}) >= 30, 90)
            await dead.wait_for(lambda rs: len(rs) >= 4, 30)
            assert service.cases is not None
            assert await service.cases.count_cases("acme") == 30
    finally:
        feedback.close()
        dead.close()
    keys = {key for key, _h, _r in feedback.records}
    assert keys == {f"P-{i:06d}" for i in range(30)}
    for key, headers, result in feedback.records:
        assert result["external_interaction_id"] == key
        assert result["tenant"] == "acme"
        assert headers["idempotency-key"] == result["idempotency_key"]
        assert headers["case-id"] == result["case_id"]
    reasons = sorted(d["reason"] for d in dead.records)
    assert reasons == ["bad_timestamp", "invalid_json", "not_an_object", "tenant_mismatch"]
    for d in dead.records:
        assert (d["tenant"], d["connector"], d["stage"]) == ("acme", "plat", "platform")
        assert d["path"].startswith(f"{events_topic}/")
        assert d["raw"] in bad
    # every event was consumed and its offset committed on the platform cluster
    assert committed(platform_kafka, conn.group_id, events_topic) == len(values)


async def test_avro_events_with_a_configured_schema_and_json_feedback(
    kafka: str, platform_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    schema = {
        "type": "record",
        "name": "Interaction",
        "namespace": "platform",
        "fields": [
            {"name": "conversationId", "type": "string"},
            {"name": "start_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "agent", "type": ["null", "string"], "default": None},
            {"name": "wrap_up", "type": "string"},
        ],
    }
    schema_file = tmp_path / "interaction.avsc"
    schema_file.write_text(json.dumps(schema))
    parsed = fastavro.parse_schema(schema)

    def encode(i: int) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(
            buf,
            parsed,
            {
                "conversationId": f"AV-{i}",
                "start_time": 1_795_000_000_000 + i,
                "agent": "a-1",
                "wrap_up": "resolved",
            },
        )
        return buf.getvalue()

    events_topic, feedback_topic = f"{prefix}.avro-events", f"{prefix}.avro-feedback"
    platform_topics(platform_kafka, events_topic, feedback_topic, partitions=1)
    conn = platform_connector(
        platform_kafka,
        "plat-avro",
        events_topic,
        feedback_topic,
        value_format="avro",
        avro_schema=str(schema_file),
        feedback_format="json",
    )
    settings = platform_settings(kafka, prefix, tmp_path / "data", [conn])
    feedback = FeedbackReader(platform_kafka, feedback_topic, "json")
    dead = TopicReader(kafka, topics(prefix).dead_letter, DEAD_LETTER)
    values = [(None, encode(0)), (None, b"\x02garbage-not-avro"), (None, encode(1))]
    try:
        async with running(settings) as service:
            produce(platform_kafka, events_topic, values)
            await feedback.wait_for(lambda rs: len({r[0] for r in rs}) >= 2, 90)
            await dead.wait_for(lambda rs: len(rs) >= 1, 30)
            assert service.cases is not None
            assert await service.cases.count_cases("acme") == 2
    finally:
        feedback.close()
        dead.close()
    assert {key for key, _h, _r in feedback.records} == {"AV-0", "AV-1"}
    for _key, headers, result in feedback.records:
        assert headers["idempotency-key"] == result["idempotency_key"]
    assert [d["reason"] for d in dead.records] == ["schema_mismatch"]


async def test_a_wrong_platform_password_stops_the_start_naming_the_connector(
    kafka: str, platform_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    events_topic = f"{prefix}.events"
    platform_topics(platform_kafka, events_topic)
    conn = platform_connector(
        platform_kafka, "plat", events_topic, None, password="not-the-Password-1"
    )
    settings = platform_settings(kafka, prefix, tmp_path / "data", [conn])
    with pytest.raises(ConfigError) as caught:
        async with running(settings):
            pass
    message = str(caught.value)
    assert "tenants[acme].platform_connectors[plat]: the broker refused the login" in message
    assert "(SCRAM-SHA-512)" in message
    assert "Authentication failed" in message
    assert "not-the-Password-1" not in message


async def test_an_event_naming_its_recording_by_url_has_it_fetched(
    kafka: str, platform_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    """The platform-event path shares the fetch stage: 429-then-200 ends stored (the bytes the
    server served), a 404 ends missing with a ``recording_fetch_failed`` dead letter."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x02" * 4000)
    audio = buf.getvalue()
    events_topic = f"{prefix}.rec-events"
    platform_topics(platform_kafka, events_topic, partitions=1)
    dead = TopicReader(kafka, topics(prefix).dead_letter, DEAD_LETTER)
    with RecordingServer() as server:
        server.put("p.wav", audio)
        conn = platform_connector(
            platform_kafka,
            "plat-rec",
            events_topic,
            None,
            ingest={
                "source_system": "platform",
                "mapping": {"external_interaction_id": "conversationId", "recording_ref": "audio"},
            },
            recording_fetch={
                "timeout_seconds": 2,
                "max_attempts": 3,
                "backoff_initial_seconds": 0.2,
                "backoff_max_seconds": 0.5,
            },
        )
        settings = platform_settings(
            kafka, prefix, tmp_path / "data", [conn], api={"connect_allow": ["127.0.0.1"]}
        )
        values = [
            (None, json.dumps(event(1, audio=server.url("/busy/1/p.wav"))).encode()),
            (None, json.dumps(event(2, audio=server.url("/ok/nowhere.wav"))).encode()),
        ]
        try:
            async with running(settings) as service:
                produce(platform_kafka, events_topic, values)
                stored = await _wait_recording(service, "P-000001", "stored")
                missing = await _wait_recording(service, "P-000002", "missing")
                await dead.wait_for(
                    lambda rs: any(d["reason"] == "recording_fetch_failed" for d in rs), 30
                )
        finally:
            dead.close()
    rec = stored["recording"]
    assert rec["sha256"] == hashlib.sha256(audio).hexdigest() and rec["attempts"] == 2
    assert missing["recording"]["http_status"] == 404
    failed = [d for d in dead.records if d["reason"] == "recording_fetch_failed"]
    assert [(d["connector"], "404" in d["message"]) for d in failed] == [("plat-rec", True)]


async def _wait_recording(service: Service, ext: str, status: str) -> dict[str, Any]:
    """The conversation of ``ext``'s case once its recording reached ``status``."""
    assert service.cases is not None
    deadline = time.monotonic() + 60
    seen = None
    while time.monotonic() < deadline:
        async with service.cases.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(cases.c.conversation).where(
                        cases.c.case_id == case_id("acme", "platform", ext)
                    )
                )
            ).first()
        seen = json.loads(row.conversation) if row is not None else None
        if seen is not None and (seen.get("recording") or {}).get("status") == status:
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"{ext}: recording never {status}; last seen {seen}")
