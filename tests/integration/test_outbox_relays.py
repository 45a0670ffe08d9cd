"""Two outbox relays on one PostgreSQL database and one Kafka broker publish each row once.

Each relay has its own engine and producer (as two ``callstream run`` processes would); cases are
written while both relays run, some of them updated several times, and the results topic must
then hold every result exactly once, each case's versions in order.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest
from servers.postgres import PostgresServer
from sqlalchemy import func, select
from support import TopicReader, conversation_record

from streams.cases.store import CaseStore, OutboxRelay, outbox
from streams.codec import AvroCodec
from streams.kafka import Producer, client_config
from streams.metrics import Metrics
from streams.topics import Topics, ensure_topics

CASES = 300
UPDATES = 3


@pytest.fixture
async def stores(pg_server: PostgresServer) -> AsyncIterator[tuple[CaseStore, CaseStore]]:
    pg_server.reset()
    codec, topics = AvroCodec(), Topics("relays")
    async with (
        CaseStore(pg_server.async_url(), codec, topics, lambda _t: ()) as one,
        CaseStore(pg_server.async_url(), codec, topics, lambda _t: ()) as two,
    ):
        yield one, two


async def test_two_relays_publish_each_row_once_in_order_per_case(
    kafka: str, prefix: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    from confluent_kafka.admin import AdminClient

    topics = Topics(prefix)
    for store in stores:
        store.topics = topics
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), topics.all(), 3, 1)
    writer = stores[0]
    async with (
        Producer(client_config(kafka, {})) as p1,
        Producer(client_config(kafka, {})) as p2,
    ):
        relays = [
            OutboxRelay(stores[0], p1, metrics=Metrics(), batch=50, idle_sleep=0.01),
            OutboxRelay(stores[1], p2, metrics=Metrics(), batch=50, idle_sleep=0.01),
        ]
        for relay in relays:
            await relay.start()
        for version in range(UPDATES):  # every case opened, then updated twice
            for start in range(0, CASES, 50):
                await writer.apply(
                    [
                        conversation_record(f"C{i}", metadata={"v": str(version)})
                        for i in range(start, start + 50)
                    ]
                )
                for relay in relays:
                    relay.wake()
        for _ in range(200):
            async with writer.engine.connect() as conn:
                left = (
                    await conn.execute(select(func.count()).where(outbox.c.published_at.is_(None)))
                ).scalar_one()
            if not left:
                break
            await asyncio.sleep(0.1)
        counts = [r.metrics.results_published._value.get() for r in relays]
        for relay in relays:
            await relay.stop()
    assert left == 0
    reader = TopicReader(kafka, topics.analysis_results, "callstream.AnalysisResult")
    try:
        while len(reader.records) < CASES * UPDATES:
            assert reader.poll(5), f"{len(reader.records)} results read"
        reader.poll(2)  # a duplicate would arrive now
    finally:
        reader.close()
    keys = [r["idempotency_key"] for r in reader.records]
    assert len(keys) == CASES * UPDATES == len(set(keys)), "a result was published twice"
    versions = collections.defaultdict(list)
    for r in reader.records:
        versions[r["case_id"]].append(r["result_version"])
    assert all(v == [1, 2, 3] for v in versions.values()), "a case's results out of order"
    print(f"results published by each relay: {counts}")
    assert all(counts), f"one relay published nothing: {counts}"


async def test_a_relay_mid_publish_leaves_the_other_shards_to_a_second_relay(
    kafka: str, prefix: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """While one relay holds its round open (Kafka slow to acknowledge, say), a second relay
    still publishes: a round locks a group of shards, not every free shard. A relay alone then
    drains every shard, and "nothing published" means nothing is left."""
    from confluent_kafka.admin import AdminClient

    topics = Topics(prefix)
    for store in stores:
        store.topics = topics
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), topics.all(), 3, 1)
    await stores[0].apply([conversation_record(f"C{i}") for i in range(CASES)])
    total = await _unpublished(stores[0])
    async with (
        Producer(client_config(kafka, {})) as p1,
        Producer(client_config(kafka, {})) as p2,
    ):
        slow = OutboxRelay(stores[0], p1, metrics=Metrics(), batch=total)
        other = OutboxRelay(stores[1], p2, metrics=Metrics(), batch=total)
        async with stores[0].engine.connect() as held:
            await held.begin()
            claimed = await slow._claim_postgres(held)  # the round stays open
            assert 0 < len(claimed) < total
            published = 0
            while sent := await other.publish_once():
                published += sent
            assert published == total - len(claimed), "the second relay took no free shard"
            await held.rollback()  # the slow relay dies mid-round: its rows stay unpublished
        again = 0
        while sent := await slow.publish_once():
            again += sent
        assert again == len(claimed)
    assert await _unpublished(stores[0]) == 0


async def _unpublished(store: CaseStore) -> int:
    async with store.engine.connect() as conn:
        return int(
            (
                await conn.execute(select(func.count()).where(outbox.c.published_at.is_(None)))
            ).scalar_one()
        )
