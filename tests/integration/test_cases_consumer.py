"""The cases consumer on the real broker: an upgrade takes the previous release's positions, a
batch is committed only once stored, and a record that cannot be decoded is dead-lettered
without holding up its partition."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from support import TopicReader, conversation_record

from streams.agents.cases import CasesConsumer, CaseWriter, adopt_offsets, cases_group
from streams.app import processors_group
from streams.cases.store import CaseStore, OutboxRelay
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.kafka import Producer as CsProducer
from streams.kafka import client_config
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.topics import Topics, ensure_topics

CODEC = AvroCodec()
PARTITIONS = 2


def _topics(kafka: str, prefix: str) -> Topics:
    topics = Topics(prefix)
    names = [topics.conversations, topics.dead_letter, topics.cases, topics.analysis_results]
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), names, PARTITIONS, 1)
    return topics


def _conversation(i: int) -> bytes:
    source = {
        "file_id": "f" * 32,
        "connector": "crm",
        "path": "/upload/calls.csv",
        "row": i + 1,
        "announced_at": dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
    }
    return CODEC.encode("callstream.Conversation", conversation_record(f"CALL-{i}", source=source))


def _produce(kafka: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    """Write ``(partition, value)`` pairs in order."""
    producer = Producer({"bootstrap.servers": kafka})
    for partition, value in values:
        producer.produce(topic, value, key=b"k", partition=partition)
    assert producer.flush(30) == 0


def _committed(kafka: str, group: str, topic: str) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in probe.committed(parts, timeout=15)}
    finally:
        probe.close()


def _commit(kafka: str, group: str, offsets: list[TopicPartition]) -> None:
    committer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        committer.commit(offsets=offsets, asynchronous=False)
    finally:
        committer.close()


def test_a_group_takes_the_legacy_positions_once(kafka: str, prefix: str) -> None:
    topic = _topics(kafka, prefix).conversations
    config = client_config(kafka, {})
    _produce(kafka, topic, [(0, b"x")] * 5 + [(1, b"y")] * 3)
    _commit(kafka, "legacy", [TopicPartition(topic, 0, 4)])  # partition 1: never committed

    assert adopt_offsets(config, "legacy", "new", topic) == 1
    assert _committed(kafka, "new", topic) == {0: 4, 1: -1001}  # -1001: no position

    _commit(kafka, "legacy", [TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 3)])
    assert adopt_offsets(config, "legacy", "new", topic) == 0  # it has positions: kept
    assert _committed(kafka, "new", topic) == {0: 4, 1: -1001}


async def test_an_upgraded_worker_resumes_where_faust_stopped_and_commits_what_it_stored(
    kafka: str, prefix: str, tmp_path: Path
) -> None:
    """Partition 0 holds CALL-0..3 and an undecodable record, the previous release's group
    committed up to CALL-2. The consumer stores CALL-2 and CALL-3 only, dead-letters the bad
    record (reason ``undecodable_record``), and commits past it; a second start reads nothing
    again."""
    topics = _topics(kafka, prefix)
    _produce(kafka, topics.conversations, [(0, _conversation(i)) for i in range(4)])
    _produce(kafka, topics.conversations, [(0, b"\xff not avro")])
    _commit(kafka, processors_group(topics), [TopicPartition(topics.conversations, 0, 2)])
    settings = ProcessorSettings(session_timeout_seconds=6)
    metrics = Metrics()
    config = client_config(kafka, {})
    producer = CsProducer(config)
    await producer.start()
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    dead = DeadLetters(CODEC, topics, metrics, LocalMediaStore(tmp_path / "media"), 1_000_000)
    async with CaseStore(url, CODEC, topics, lambda _t: ()) as store:
        relay = OutboxRelay(store, producer, metrics=metrics)
        writer = CaseWriter(store, producer, dead, metrics, settings)
        for start in range(2):
            consumer = CasesConsumer(config, topics, CODEC, writer, relay, metrics, settings)
            await consumer.start()
            try:
                deadline = asyncio.get_running_loop().time() + 60
                while _committed(kafka, consumer.group, topics.conversations)[0] != 5:
                    assert asyncio.get_running_loop().time() < deadline, "nothing committed"
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2 if start else 0)  # the second start: time to misbehave
            finally:
                await consumer.stop()
            assert await store.count_cases() == 2, f"start {start + 1}"
        assert metrics.cases_opened.labels(tenant="acme")._value.get() == 2
        assert metrics.duplicates_absorbed.labels(tenant="acme")._value.get() == 0
    await producer.stop()
    assert consumer.group == cases_group(topics) == f"{prefix}-cases"
    letters = TopicReader(kafka, topics.dead_letter, "callstream.DeadLetter")
    try:
        seen = await letters.wait_for(lambda r: len(r) >= 1, 30)
    finally:
        letters.close()
    assert [(r["reason"], r["stage"], r["raw"]) for r in seen] == [
        ("undecodable_record", "cases", b"\xff not avro")
    ]
