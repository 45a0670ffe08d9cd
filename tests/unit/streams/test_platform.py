"""Platform connector pieces without a network: settings, value decoding, event mapping."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiohttp import web
from pydantic import ValidationError

from streams.cases.store import delivery_key
from streams.codec import AvroCodec
from streams.errors import ConfigError
from streams.ingest.parse import ParseSettings, RowInvalid, map_document
from streams.platform.convert import EventRef, event_record
from streams.platform.decode import (
    EventInvalid,
    RegistryUnavailable,
    SchemaRegistry,
    ValueDecoder,
)
from streams.platform.settings import PlatformConnectorSettings
from streams.redact import Redactors
from streams.settings import load_settings
from streams.topics import Topics

REDACTORS = Redactors({}, lambda purpose: b"k" * 32)

SCHEMA = {
    "type": "record",
    "name": "Interaction",
    "fields": [
        {"name": "CallID", "type": "string"},
        {"name": "start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "score", "type": ["null", "double"], "default": None},
    ],
}


def conn(**fields: Any) -> PlatformConnectorSettings:
    base: dict[str, Any] = {
        "name": "plat",
        "bootstrap_servers": "platform:9092",
        "topics": ["events"],
        "group_id": "g",
        "ingest": {"mapping": {"external_interaction_id": "CallID"}},
    }
    return PlatformConnectorSettings.model_validate({**base, **fields})


def avro(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(SCHEMA), record)
    return buf.getvalue()


def test_settings_refuse_inconsistent_fields_naming_them() -> None:
    with pytest.raises(ValidationError, match=r"sasl\.username: required"):
        conn(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", password="x")
    with pytest.raises(ValidationError, match="avro needs avro_schema or schema_registry_url"):
        conn(value_format="avro")
    with pytest.raises(ValidationError, match="must be an Avro record"):
        conn(value_format="avro", avro_schema='"string"')
    with pytest.raises(ValidationError, match="http:// or https://"):
        conn(value_format="avro", schema_registry_url="file:///etc/passwd")
    ok = conn(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", username="u", password="pw")
    assert "pw" not in repr(ok)
    assert ok.client_properties()["sasl.password"] == "pw"


def test_platform_connector_names_are_unique_with_file_connectors(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "tenants": [
                    {
                        "id": "acme",
                        "connectors": [{"name": "plat", "store": {"type": "local", "root": "x"}}],
                        "platform_connectors": [conn().model_dump(mode="json")],
                    }
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match="duplicate connector name"):
        load_settings(config)


def test_json_values_decode_and_bad_ones_get_reason_codes() -> None:
    decoder = ValueDecoder(conn())
    assert decoder.decode(b'{"CallID": "C-1"}') == {"CallID": "C-1"}
    for value, reason in [
        (b'{"CallID": ', "invalid_json"),
        (b"[1]", "not_an_object"),
        (b"", "empty_value"),
        (None, "empty_value"),
        (b"[" * 100_000, "invalid_json"),
        (b" " * 1_000_000, "too_large"),
    ]:
        with pytest.raises(EventInvalid) as caught:
            decoder.decode(value)
        assert caught.value.reason == reason


def test_schemaless_avro_decodes_to_json_types_and_rejects_other_bytes() -> None:
    decoder = ValueDecoder(conn(value_format="avro", avro_schema=json.dumps(SCHEMA)))
    value = avro({"CallID": "C-1", "start": 1_795_000_000_000, "score": 1.5})
    assert decoder.decode(value) == {
        "CallID": "C-1",
        "start": "2026-11-18T11:06:40+00:00",
        "score": 1.5,
    }
    for bad in (b"\x02", value + b"extra", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"):
        with pytest.raises(EventInvalid) as caught:
            decoder.decode(bad)
        assert caught.value.reason == "schema_mismatch"


async def test_confluent_wire_format_fetches_the_writer_schema_once() -> None:
    calls: list[str] = []

    async def schema(request: web.Request) -> web.Response:
        calls.append(request.match_info["id"])
        if request.match_info["id"] == "7":
            return web.json_response({"schema": json.dumps(SCHEMA)})
        if request.match_info["id"] == "8":
            return web.json_response({"schema": "{}", "schemaType": "PROTOBUF"})
        return web.json_response({"error_code": 40403}, status=404)

    app = web.Application()
    app.router.add_get("/schemas/ids/{id}", schema)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}"
        decoder = ValueDecoder(conn(value_format="avro", schema_registry_url=url))
        body = avro({"CallID": "C-9", "start": 0, "score": None})
        values = [struct.pack(">bI", 0, sid) + body for sid in (7, 7, 8, 9)]
        await decoder.prepare([*values, b"\x01junk"])
        await decoder.prepare(values)  # cached: no second request
        assert sorted(calls) == ["7", "8", "9"]
        assert decoder.decode(values[0])["CallID"] == "C-9"
        reasons = []
        for value in [values[2], values[3], b"\x01\x00\x00\x00\x07", b"\x00"]:
            with pytest.raises(EventInvalid) as caught:
                decoder.decode(value)
            reasons.append(caught.value.reason)
        assert reasons == [
            "unknown_schema",
            "unknown_schema",
            "invalid_wire_format",
            "invalid_wire_format",
        ]
    finally:
        await runner.cleanup()
    with pytest.raises(RegistryUnavailable):  # the registry is gone: transient, retried
        await SchemaRegistry(url, timeout=2).fetch([1])


def test_events_map_like_csv_columns_with_mapping_aliases_and_metadata() -> None:
    settings = ParseSettings(mapping={"external_interaction_id": "CallID"})
    fields, metadata = map_document(
        {
            "CallID": "C-1",
            "Start_Time": "2026-11-20T09:00:00Z",
            "agent": "a-1",
            "queue": "billing",
            "attrs": {"vip": True},
            "tenant": "acme",
            "none": None,
        },
        settings,
        skip=("tenant",),
    )
    assert fields == {
        "external_interaction_id": "C-1",
        "started_at": "2026-11-20T09:00:00Z",
        "agent_id": "a-1",
    }
    assert metadata == {"queue": "billing", "attrs": '{"vip": true}'}
    with pytest.raises(RowInvalid) as caught:
        map_document({"CallID": "C\x00"}, settings)
    assert caught.value.error.reason == "control_character"


def test_an_event_record_has_a_delivery_key_per_partition_offset() -> None:
    codec, topics = AvroCodec(), Topics("t")
    connector = conn()
    ref = EventRef("events", 2, 41, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    doc = {"CallID": "C-1", "start": "2026-11-20T09:00:00Z", "extra": 1}
    topic, key, value = event_record(
        doc, "acme", connector, ref, codec, topics, 1_000_000, REDACTORS
    )
    conv = codec.decode("callstream.Conversation", value)
    assert (topic, key) == ("t.conversations.v1", b"acme/default/C-1")
    assert conv["source"]["connector"] == "plat"
    assert conv["source"]["path"] == "events/2@41"
    assert conv["metadata"] == {"extra": "1"}
    dkey = delivery_key(conv)
    assert dkey is not None and dkey.startswith("platform:pk_") and dkey.endswith(":42")
    again = event_record(doc, "acme", connector, ref, codec, topics, 1_000_000, REDACTORS)
    assert delivery_key(codec.decode("callstream.Conversation", again[2])) == dkey
    other = EventRef("events", 3, 41, ref.timestamp)
    moved = event_record(doc, "acme", connector, other, codec, topics, 1_000_000, REDACTORS)
    assert delivery_key(codec.decode("callstream.Conversation", moved[2])) != dkey
    with pytest.raises(RowInvalid) as caught:
        event_record(
            {**doc, "tenant": "globex"}, "acme", connector, ref, codec, topics, 10**6, REDACTORS
        )
    assert caught.value.error.reason == "tenant_mismatch"


async def test_an_event_kafka_refuses_for_good_becomes_a_dead_letter_not_a_gap() -> None:
    """The batch is refused (one record too large for the broker); the others are sent one by
    one and the refused event is replaced by ``publish_refused`` keeping its raw value."""
    from prometheus_client import CollectorRegistry

    from streams.errors import PublishError
    from streams.metrics import Metrics
    from streams.platform.inbound import PlatformInbound

    sent: list[Any] = []

    class Producer:
        async def send_batch(self, records: list[Any]) -> None:
            if any(r == "huge" for r in records):
                raise PublishError("too large", retriable=False, code="MSG_SIZE_TOO_LARGE")
            sent.extend(records)

    class Dead:
        def build(self, **fields: Any) -> Any:
            return ("dead", fields["reason"], fields["raw"], fields["path"])

    inbound = PlatformInbound(
        "acme",
        conn(),
        producer=Producer(),  # type: ignore[arg-type]
        codec=AvroCodec(),
        topics=Topics("t"),
        dead=Dead(),  # type: ignore[arg-type]
        metrics=Metrics(CollectorRegistry()),
        max_record_bytes=1_000_000,
        redactors=REDACTORS,
    )
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    judged = [
        (EventRef("events", 0, 7, now), b"a", "ok-1"),
        (EventRef("events", 0, 8, now), b"b" * 10, "huge"),
        (EventRef("events", 0, 9, now), b"c", "ok-2"),
    ]
    await inbound._publish(judged)  # type: ignore[arg-type]
    assert sent == ["ok-1", ("dead", "publish_refused", b"b" * 10, "events/0@8"), "ok-2"]
