"""Real-broker checks for streams.embedded.kafka: fetch, start, produce/consume, restart."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.embedded.kafka import (
    KAFKA_VERSION,
    KafkaStartError,
    LocalKafka,
    _new_cluster_id,
    ensure_jars,
)


def _create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topic = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    futures = admin.create_topics([new_topic])
    for future in futures.values():
        future.result(timeout=30)


def _produce_one(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "message not delivered within 30s"
    assert errors == []


def _consume_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0
) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[tuple[bytes | None, bytes | None]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append((msg.key(), msg.value()))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


def test_cluster_ids_are_valid_for_storage_tool() -> None:
    # 1 in 64 random ids starts with '-', which StorageTool's parser takes for an option.
    ids = {_new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_ensure_jars_is_cached() -> None:
    libs = ensure_jars()
    started = time.monotonic()
    assert ensure_jars() == libs
    assert time.monotonic() - started < 1.0
    assert (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert (libs / "slf4j-reload4j-1.7.36.jar").is_file()


def test_produce_consume_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    topic = "calls.test"
    kafka = LocalKafka(data_dir, heap="512m")
    try:
        kafka.start()
        assert kafka.is_running()
        bootstrap = kafka.bootstrap_servers
        assert bootstrap == f"127.0.0.1:{kafka.port}"
        meta = (data_dir / "kraft" / "meta.properties").read_text()

        _create_topic(bootstrap, topic)
        _produce_one(bootstrap, topic, b"call-1", b"hello")
        assert _consume_all(bootstrap, topic, expected=1) == [(b"call-1", b"hello")]

        kafka.stop()
        assert not kafka.is_running()
        kafka.stop()  # idempotent

        # A fresh instance on the same data dir reuses ports, cluster id and data.
        again = LocalKafka(data_dir, heap="512m")
        assert again.bootstrap_servers == bootstrap
        with again:
            assert (data_dir / "kraft" / "meta.properties").read_text() == meta
            assert (
                topic
                in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
            )
            assert _consume_all(bootstrap, topic, expected=1) == [(b"call-1", b"hello")]
        assert not again.is_running()
    finally:
        kafka.stop()


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    # -Xmx1k makes the JVM refuse to start: start() must say so, with the log tail.
    kafka = LocalKafka(tmp_path / "broken", heap="1k")
    with pytest.raises(KafkaStartError, match="exited with code") as info:
        kafka.start(timeout=60)
    assert "heap" in str(info.value).lower()
    assert not kafka.is_running()
