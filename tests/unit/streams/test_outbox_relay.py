"""The outbox relay against a real SQLite file, with an in-memory producer (no network)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from streams.cases.store import PUBLISHED_VALUE, CaseStore, OutboxRelay, outbox
from streams.codec import AvroCodec
from streams.errors import PublishError
from streams.kafka import Producer, Record
from streams.metrics import Metrics
from streams.topics import Topics

TOPICS = Topics("t")
T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


class MemoryProducer(Producer):
    """Keeps what it is sent; fails the next ``failures`` batches like a broker that is gone."""

    def __init__(self, failures: int = 0) -> None:  # no librdkafka client
        self.sent: list[Record] = []
        self.batches = 0
        self.failures = failures

    async def send_batch(self, records: Sequence[Record]) -> None:
        if self.failures:
            self.failures -= 1
            raise PublishError("broker transport failure")
        self.batches += 1
        self.sent.extend(records)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


@pytest.fixture
async def store(tmp_path: Path, codec: AvroCodec) -> AsyncIterator[CaseStore]:
    async with CaseStore(
        f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}", codec, TOPICS, lambda _tenant: ()
    ) as s:
        yield s


def conversation(i: int) -> dict[str, Any]:
    """A valid conversation as the validate agent passes it to the case store."""
    return {
        "tenant": "acme",
        "source_system": "five9",
        "external_interaction_id": f"CALL-{i}",
        "channel": "voice",
        "direction": "inbound",
        "started_at": T0,
        "ended_at": T0 + dt.timedelta(seconds=90),
        "agent_id": "a-1",
        "agent_name": None,
        "team": "Billing",
        "campaign": "winter",
        "ani": None,
        "dnis": None,
        "recording_ref": None,
        "transcript_ref": None,
        "turns": [],
        "metadata": {},
        "source": {
            "file_id": "f" * 32,
            "connector": "sftp",
            "path": "export.csv",
            "row": i,
            "announced_at": T0,
        },
    }


async def outbox_rows(store: CaseStore) -> list[tuple[int, Record, bool]]:
    """Every outbox row by id: (id, record as published, marked published by an older
    release)."""
    columns = (outbox.c.id, outbox.c.topic, outbox.c.key, PUBLISHED_VALUE, outbox.c.published_at)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(*columns).order_by(outbox.c.id))).all()
    return [
        (r.id, (r.topic, bytes(r.key), bytes(r.value)), r.published_at is not None) for r in rows
    ]


async def unpublished(store: CaseStore) -> int:
    async with store.engine.connect() as conn:
        stmt = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        return int((await conn.execute(stmt)).scalar_one())


async def test_publishes_in_id_order_in_batches_and_deletes_what_it_published(
    store: CaseStore, codec: AvroCodec
) -> None:
    await store.apply([conversation(i) for i in range(3)])
    rows = await outbox_rows(store)
    assert [topic for _, (topic, _, _), _ in rows] == [TOPICS.cases, TOPICS.analysis_results] * 3
    metrics = Metrics()
    producer = MemoryProducer()
    relay = OutboxRelay(store, producer, metrics=metrics, batch=4)

    assert [await relay.publish_once() for _ in range(3)] == [4, 2, 0]

    assert producer.sent == [record for _, record, _ in rows]
    assert producer.batches == 2
    assert await outbox_rows(store) == [], "the outbox holds only what is still to publish"
    events = [codec.decode("callstream.CaseEvent", v) for t, _, v in producer.sent[::2]]
    assert [(e["external_interaction_id"], e["kind"]) for e in events] == [
        ("CALL-0", "opened"),
        ("CALL-1", "opened"),
        ("CALL-2", "opened"),
    ]
    registry = metrics.registry
    assert registry.get_sample_value("callstream_results_published_total") == 3
    assert registry.get_sample_value("callstream_end_to_end_latency_seconds_count") == 3


async def test_producer_failure_leaves_rows_unpublished_and_the_next_call_sends_them(
    store: CaseStore,
) -> None:
    await store.apply([conversation(i) for i in range(2)])
    rows = await outbox_rows(store)
    producer = MemoryProducer(failures=1)
    relay = OutboxRelay(store, producer, metrics=Metrics())

    with pytest.raises(PublishError):
        await relay.publish_once()
    assert await outbox_rows(store) == rows
    assert producer.sent == []

    assert await relay.publish_once() == 4
    assert producer.sent == [record for _, record, _ in rows]
    assert await unpublished(store) == 0


async def test_running_relay_outlives_a_broker_outage_and_loses_nothing(store: CaseStore) -> None:
    producer = MemoryProducer(failures=1)
    relay = OutboxRelay(store, producer, metrics=Metrics(), idle_sleep=0.01)
    await store.apply([conversation(i) for i in range(5)])
    rows = await outbox_rows(store)  # before the relay runs: it deletes what it publishes
    await relay.start()
    try:
        relay.wake()
        async with asyncio.timeout(30):  # a bound on a hang, not on speed
            while await unpublished(store):
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    assert len(rows) == 10
    assert producer.sent == [record for _, record, _ in rows]


async def test_stop_publishes_what_is_committed(store: CaseStore) -> None:
    producer = MemoryProducer()
    relay = OutboxRelay(store, producer, metrics=Metrics(), idle_sleep=60)
    await relay.start()
    await asyncio.sleep(0)  # the relay finds nothing and waits
    await store.apply([conversation(i) for i in range(3)])  # committed, no wake()
    rows = await outbox_rows(store)

    await relay.stop()

    assert await outbox_rows(store) == []
    assert len(rows) == 6
    assert producer.sent == [record for _, record, _ in rows]


async def test_stop_with_the_broker_gone_returns_and_keeps_rows_for_the_next_start(
    store: CaseStore,
) -> None:
    await store.apply([conversation(i) for i in range(2)])
    relay = OutboxRelay(store, MemoryProducer(failures=10), metrics=Metrics())
    await relay.stop()
    assert await unpublished(store) == 4

    producer = MemoryProducer()
    await OutboxRelay(store, producer, metrics=Metrics()).stop()
    assert await unpublished(store) == 0
    assert len(producer.sent) == 4


class HangingProducer(MemoryProducer):
    """A broker that never acknowledges (a topic it does not know, say)."""

    async def send_batch(self, records: Sequence[Record]) -> None:
        await asyncio.Event().wait()


async def test_stop_gives_up_a_send_that_never_ends_and_returns_its_connection(
    store: CaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.apply([conversation(i) for i in range(2)])
    relay = OutboxRelay(store, HangingProducer(), metrics=Metrics(), drain_seconds=0.2)
    async with asyncio.timeout(30):  # a bound on a hang, not on speed
        await relay.stop()
    assert "not drained within" in caplog.text
    assert await unpublished(store) == 4, "the rows stay for the next relay"
    assert store.engine.sync_engine.pool.checkedout() == 0, "the connection went back"


async def test_rows_an_older_release_marked_published_are_not_sent_again_and_are_purged(
    store: CaseStore,
) -> None:
    """Releases before revision 0012 marked rows published instead of deleting them; during a
    rolling upgrade they still do. Such rows are never sent again and do not stay."""
    now = dt.datetime.now(dt.UTC)

    def row(i: int, published_at: dt.datetime | None) -> dict[str, Any]:
        return {
            "topic": TOPICS.cases,
            "key": f"k{i}".encode(),
            "value": b"v",
            "created_at": now,
            "published_at": published_at,
            "announced_at": None,
        }

    marked = [row(i, now - dt.timedelta(minutes=m)) for i, m in ((0, 600), (1, 10), (2, 0))]
    fresh = [row(i, None) for i in range(3, 5_003)]
    async with store.engine.begin() as conn:  # marked rows before, among and after the others
        await conn.execute(insert(outbox), marked[:1] + fresh[:2_500] + marked[1:] + fresh[2_500:])
    producer = MemoryProducer()
    relay = OutboxRelay(store, producer, metrics=Metrics(), batch=1_000)

    while await relay.publish_once():
        pass

    assert [key for _, key, _ in producer.sent] == [f"k{i}".encode() for i in range(3, 5_003)]
    assert await outbox_rows(store) == []


async def test_a_failing_purge_of_marked_rows_is_logged_and_the_round_still_counts(
    store: CaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The purge runs after a round was published and committed: its failure must neither
    fail that round (the relay would log "publishing failed" and back off) nor lose a row."""
    await store.apply([conversation(i) for i in range(2)])
    now = dt.datetime.now(dt.UTC)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(outbox),
            [
                {
                    "topic": TOPICS.cases,
                    "key": b"old",
                    "value": b"v",
                    "created_at": now,
                    "published_at": now,
                    "announced_at": None,
                }
            ],
        )
        await conn.execute(
            text(
                "CREATE TRIGGER keep_marked BEFORE DELETE ON outbox"
                " WHEN OLD.published_at IS NOT NULL BEGIN SELECT RAISE(ABORT, 'kept'); END"
            )
        )
    producer = MemoryProducer()
    relay = OutboxRelay(store, producer, metrics=Metrics())

    assert await relay.publish_once() == 4

    assert len(producer.sent) == 4 and await unpublished(store) == 0
    assert "purging rows marked published failed" in caplog.text
    assert "kept" in caplog.text


class RefusesOne(MemoryProducer):
    """A broker that refuses one record for good (e.g. larger than message.max.bytes)."""

    def __init__(self, refused: bytes) -> None:
        super().__init__()
        self.refused = refused

    async def send_batch(self, records: Sequence[Record]) -> None:
        if any(key == self.refused for _, key, _ in records):
            raise PublishError(
                "Broker: Message size too large", retriable=False, code="MSG_SIZE_TOO_LARGE"
            )
        await super().send_batch(records)


async def test_a_record_refused_for_good_does_not_stall_the_rows_after_it(
    store: CaseStore,
) -> None:
    await store.apply([conversation(i) for i in range(3)])
    rows = await outbox_rows(store)
    poison = rows[0][1][1]  # the first case's key
    producer = RefusesOne(poison)
    relay = OutboxRelay(store, producer, metrics=Metrics())
    for _ in range(3):
        await relay.publish_once()
    others = [record for _, record, _ in rows if record[1] != poison]
    assert producer.sent == others
