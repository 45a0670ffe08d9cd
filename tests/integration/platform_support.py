"""Helpers of the platform Kafka connector tests and benchmark: settings, events, readers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from fixtures import PLATFORM_PASSWORD, PLATFORM_USER
from support import CODEC, FromStart, settings_for

from streams.embedded.kafka import LocalKafka
from streams.platform.settings import PlatformConnectorSettings
from streams.settings import Settings, TenantSettings
from streams.topics import ensure_topics

EVENT_ID = "conversationId"
"""The platform's own name for the conversation id; mapped by ``ingest.mapping``."""


def platform_topics(broker: LocalKafka, *names: str, partitions: int = 3) -> None:
    """Create topics on the platform cluster (through its PLAINTEXT listener)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    ensure_topics(admin, list(names), partitions, 1)


def platform_connector(
    broker: LocalKafka,
    name: str,
    topic: str,
    feedback_topic: str | None,
    *,
    password: str = PLATFORM_PASSWORD,
    **overrides: Any,
) -> PlatformConnectorSettings:
    """A connector logging in to the platform broker's SCRAM listener."""
    fields: dict[str, Any] = {
        "name": name,
        "bootstrap_servers": broker.sasl_bootstrap_servers,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "username": PLATFORM_USER,
        "password": password,
        "topics": [topic],
        "group_id": f"callstream-{uuid.uuid4().hex[:8]}",
        "feedback_topic": feedback_topic,
        "ingest": {"source_system": "platform", "mapping": {"external_interaction_id": EVENT_ID}},
        **overrides,
    }
    return PlatformConnectorSettings.model_validate(fields)


def platform_settings(
    kafka: str,
    prefix: str,
    data_dir: Path,
    connectors: list[PlatformConnectorSettings],
    **extra: Any,
) -> Settings:
    """Settings of a service whose tenant ``acme`` has only platform connectors."""
    tenant = TenantSettings(id="acme", platform_connectors=connectors)
    return settings_for(kafka, prefix, data_dir, [], tenants=[tenant], **extra)


def event(i: int, **changes: Any) -> dict[str, Any]:
    """A platform's conversation event, in its own field names (aliases and the mapping)."""
    minute = i % 50
    doc: dict[str, Any] = {
        EVENT_ID: f"P-{i:06d}",
        "media_type": "chat",
        "direction": "inbound",
        "start_time": f"2026-11-20T09:{minute:02d}:00Z",
        "end_time": f"2026-11-20T09:{minute:02d}:40Z",
        "agent": f"a-{i % 7}",
        "queue": "billing",
        "turns": [
            {"speaker": "agent", "text": "Thank you for calling, how can I help?"},
            {"speaker": "customer", "text": "My invoice is wrong."},
        ],
    }
    doc.update(changes)
    return doc


def produce(broker: LocalKafka, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    """Produce ``(key, value)`` records to the platform cluster and wait for the acks."""
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for key, value in values:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0


class FeedbackReader:
    """Reads the platform's feedback topic: key, headers and the decoded result."""

    def __init__(self, broker: LocalKafka, topic: str, value_format: str = "avro") -> None:
        self.value_format = value_format
        self.records: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.arrived: list[float] = []
        self._consumer = FromStart(broker.bootstrap_servers, topic)

    def poll(self, seconds: float = 0.3) -> int:
        """Read what arrives within ``seconds``; return how many records came."""
        import json

        new = 0
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for msg in self._consumer.consume(1000, min(left, 0.2)):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                headers = {k: (v or b"").decode() for k, v in msg.headers() or []}
                if self.value_format == "json":
                    result = json.loads(value)
                else:
                    result = CODEC.decode("callstream.AnalysisResult", value)
                self.records.append(((msg.key() or b"").decode(), headers, result))
                self.arrived.append(time.time())
                new += 1
        return new

    async def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float) -> None:
        """Read until ``predicate(records)`` holds; fail with what came on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            assert time.monotonic() < deadline, f"timed out; {len(self.records)} results so far"
            await asyncio.to_thread(self.poll, 0.3)

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close()


def committed(broker: LocalKafka, group: str, topic: str, partitions: int = 3) -> int:
    """Sum of the group's committed offsets on ``topic`` (the events it has consumed)."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in offsets)
