"""Two outbox relays on one PostgreSQL database and one Kafka broker publish each row once.

Each relay has its own engine and producer (as two ``callstream run`` processes would); cases are
written while both relays run, some of them updated several times, and the results topic must
then hold every result exactly once, each case's versions in order.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator

import pytest
from servers.postgres import PostgresServer
from sqlalchemy import func, select, text, update
from support import FromStart, TopicReader, conversation_record

from streams.cases.store import CaseStore, OutboxRelay, outbox
from streams.codec import AvroCodec
from streams.errors import PublishError
from streams.kafka import Producer, Record, client_config
from streams.metrics import Metrics
from streams.topics import Topics, ensure_topics

CASES = 300
UPDATES = 3


@pytest.fixture
async def stores(
    pg_server: PostgresServer, kafka: str, prefix: str
) -> AsyncIterator[tuple[CaseStore, CaseStore]]:
    """Two case stores (two processes') on an emptied database, both publishing to the topics
    of ``prefix``, created on the broker with 3 partitions."""
    from confluent_kafka.admin import AdminClient

    pg_server.reset()
    codec, topics = AvroCodec(), Topics(prefix)
    ensure_topics(AdminClient({"bootstrap.servers": kafka}), topics.all(), 3, 1)
    async with (
        CaseStore(pg_server.async_url(), codec, topics, lambda _t: ()) as one,
        CaseStore(pg_server.async_url(), codec, topics, lambda _t: ()) as two,
    ):
        yield one, two


async def test_two_relays_publish_each_row_once_in_order_per_case(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    topics = stores[0].topics
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
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """While one relay holds its round open (Kafka slow to acknowledge, say), a second relay
    still publishes: a round locks a group of shards, not every free shard. A relay alone then
    drains every shard, and "nothing published" means nothing is left."""
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


async def test_rows_an_older_release_marked_published_are_not_sent_again_and_are_purged(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """During a rolling upgrade, workers of the release before revision 0012 still mark rows
    published instead of deleting them. This release's relay sends none of those again, and
    the table is left with nothing: a published row does not stay."""
    store = stores[0]
    topics = store.topics
    await store.apply([conversation_record(f"C{i}") for i in range(40)])
    async with store.engine.begin() as conn:  # what an older relay did with every third row
        marked = (
            await conn.execute(
                update(outbox)
                .where(outbox.c.id % 3 == 0)
                .values(published_at=func.now())
                .returning(outbox.c.key)
            )
        ).scalars()
        marked_keys = collections.Counter(bytes(k) for k in marked)
        everything = (await conn.execute(select(outbox.c.key))).scalars().all()
    expected = collections.Counter(bytes(k) for k in everything) - marked_keys
    assert marked_keys and expected
    async with Producer(client_config(kafka, {})) as producer:
        relay = OutboxRelay(store, producer, metrics=Metrics())
        while await relay.publish_once():
            pass
    reader = FromStart(kafka, [topics.cases, topics.analysis_results])
    sent: collections.Counter[bytes] = collections.Counter()
    try:
        deadline = time.monotonic() + 30
        while sent.total() < expected.total() and time.monotonic() < deadline:
            sent.update(m.key() for m in reader.consume(500, 0.5) if m.error() is None)
        sent.update(m.key() for m in reader.consume(500, 2) if m.error() is None)  # any extra
    finally:
        reader.close()
    assert sent == expected
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0


async def test_a_claim_deletes_by_primary_key_when_statistics_say_the_outbox_is_empty(
    stores: tuple[CaseStore, CaseStore],
) -> None:
    """Autovacuum often finds the outbox empty, so its statistics say "no rows" while the next
    backlog builds. A claim planned from them joined the table as a nested loop's outer side
    and took 15 s with 150,000 rows waiting; it must look the claimed ids up by primary key."""
    store = stores[0]
    async with store.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE outbox"))  # found empty
        stats = text("SELECT reltuples FROM pg_class WHERE relname = 'outbox'")
        assert (await autocommit.execute(stats)).scalar_one() <= 0
    await store.apply([conversation_record(f"C{i}") for i in range(3_000)])  # the backlog
    statement = OutboxRelay(store, Producer.__new__(Producer), metrics=Metrics()).claim_statement(
        list(range(8))
    )
    sql = str(statement.compile(store.engine.sync_engine, compile_kwargs={"literal_binds": True}))
    async with store.engine.begin() as conn:
        plan = "\n".join((await conn.execute(text("EXPLAIN " + sql))).scalars())
        await conn.rollback()
    assert "Index Scan on outbox_pkey" in plan or "Index Scan using outbox_pkey" in plan, plan
    assert "Index Cond: (id = ANY" in plan, plan
    assert "Nested Loop" not in plan, plan


class _Refusing:
    """A producer whose broker is gone: every batch fails (transiently)."""

    async def send_batch(self, records: list[Record]) -> None:
        raise PublishError("broker unreachable", retriable=True)


async def _results(kafka: str, topic: str, expected: int) -> list[dict[str, object]]:
    reader = TopicReader(kafka, topic, "callstream.AnalysisResult")
    try:
        while len(reader.records) < expected:
            assert reader.poll(5), f"{len(reader.records)} of {expected} results read"
        reader.poll(2)  # a duplicate would arrive now
    finally:
        reader.close()
    return reader.records


async def test_writers_publish_what_they_wrote_once_and_in_order_beside_two_relays(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """Two writers (two processes' case stores) update the same cases concurrently and each
    publishes what it committed (``publish_written``) while two relays run: every result is on
    the topic once, each case's versions in order, and the writers published most of them."""
    topics = stores[0].topics
    chunks = [list(range(start, start + 50)) for start in range(0, CASES, 50)]
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
        by_writers = [0, 0]

        async def write(n: int) -> None:
            order = chunks if n == 0 else chunks[::-1]  # the writers meet on the same cases
            for version in range(UPDATES):
                for chunk in order:
                    outcome = await stores[n].apply(
                        [
                            conversation_record(f"C{i}", metadata={"v": f"{n}.{version}"})
                            for i in chunk
                        ]
                    )
                    by_writers[n] += await relays[n].publish_written(outcome.written)

        await asyncio.gather(write(0), write(1))
        for _ in range(200):
            if not await _unpublished(stores[0]):
                break
            await asyncio.sleep(0.1)
        for relay in relays:
            await relay.stop()
    assert await _unpublished(stores[0]) == 0
    versions_per_case = 2 * UPDATES
    records = await _results(kafka, topics.analysis_results, CASES * versions_per_case)
    keys = [r["idempotency_key"] for r in records]
    assert len(keys) == CASES * versions_per_case == len(set(keys)), "a result was published twice"
    versions = collections.defaultdict(list)
    for r in records:
        versions[r["case_id"]].append(r["result_version"])
    expected = list(range(1, versions_per_case + 1))
    assert all(v == expected for v in versions.values()), "a case's results out of order"
    print(f"rows published by the writers: {by_writers} of {2 * CASES * versions_per_case}")
    assert all(by_writers), "a writer published nothing itself"


async def test_a_writer_leaves_its_rows_to_the_relay_while_an_older_row_of_its_case_waits(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """Version 1 of a case could not be published (Kafka was down); version 2's writer must
    not publish before it, so it leaves its rows too, and a relay then sends 1 before 2. A
    writer of another case is not held back."""
    store = stores[0]
    topics = store.topics
    async with Producer(client_config(kafka, {})) as producer:
        down = OutboxRelay(store, _Refusing(), metrics=Metrics())  # type: ignore[arg-type]
        first = await store.apply([conversation_record("C1", metadata={"v": "1"})])
        assert len(first.written) == 2  # the CaseEvent and the result
        assert await down.publish_written(first.written) == 0
        assert await _unpublished(store) == 2  # kept for the relay
        relay = OutboxRelay(store, producer, metrics=Metrics())
        second = await store.apply([conversation_record("C1", metadata={"v": "2"})])
        assert await relay.publish_written(second.written) == 0  # version 1 waits: not before it
        other = await store.apply([conversation_record("C2")])
        assert await relay.publish_written(other.written) == 2  # another case goes at once
        assert await _unpublished(store) == 4
        while await relay.publish_once():
            pass
    assert await _unpublished(store) == 0
    records = await _results(kafka, topics.analysis_results, 3)
    assert sorted((r["external_interaction_id"], r["result_version"]) for r in records) == [
        ("C1", 1),
        ("C1", 2),
        ("C2", 1),
    ]
    c1 = [r["result_version"] for r in records if r["external_interaction_id"] == "C1"]
    assert c1 == [1, 2]


async def test_a_writer_waits_for_a_relay_round_and_publishes_only_what_is_left(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """A relay that claimed some of a batch's rows holds their shards until Kafka answers; the
    writer waits for that round in the lock queue, then publishes the rest: each row once."""
    topics = stores[0].topics
    outcome = await stores[0].apply([conversation_record(f"C{i}") for i in range(100)])
    async with (
        Producer(client_config(kafka, {})) as p1,
        Producer(client_config(kafka, {})) as p2,
    ):
        relay = OutboxRelay(stores[1], p1, metrics=Metrics(), batch=1_000)
        writer = OutboxRelay(stores[0], p2, metrics=Metrics())
        async with stores[1].engine.connect() as held:
            await held.begin()
            claimed = await relay._claim_postgres(held)  # a relay's round, still open
            assert 0 < len(claimed) < len(outcome.written)
            waiting = asyncio.create_task(writer.publish_written(outcome.written))
            await asyncio.sleep(1)
            assert not waiting.done(), "the writer did not wait for the relay's shards"
            await relay._send(claimed)
            await held.commit()
        published = await waiting
    assert published == len(outcome.written) - len(claimed)
    assert await _unpublished(stores[0]) == 0
    records = await _results(kafka, topics.analysis_results, 100)
    assert len({r["case_id"] for r in records}) == len(records) == 100


class _Slow:
    """Kafka acknowledges every batch after 50 ms."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def send_batch(self, records: list[Record]) -> None:
        await asyncio.sleep(0.05)
        await self.producer.send_batch(records)


async def test_busy_writers_do_not_starve_the_relay(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """Four writers publish their own batches back to back, each taking every shard. A row
    left to the relay (Kafka failed its writer) must still go out promptly: the relay queues
    for the shards like the writers do (trying them without waiting, it found them busy for as
    long as the writers kept going)."""
    left = await stores[0].apply([conversation_record("LEFT")])
    down = OutboxRelay(stores[0], _Refusing(), metrics=Metrics())  # type: ignore[arg-type]
    assert await down.publish_written(left.written) == 0
    ids = [w.id for w in left.written]
    stop = asyncio.Event()
    async with (
        Producer(client_config(kafka, {})) as p1,
        Producer(client_config(kafka, {})) as p2,
    ):
        slow = [_Slow(p1), _Slow(p2)]  # Kafka takes a while: each writer holds the shards longer
        writers = [
            OutboxRelay(store, p, metrics=Metrics()) for store, p in zip(stores, slow, strict=True)
        ]  # type: ignore[arg-type]
        published = [0] * 4

        async def write(n: int) -> None:
            store, writer = stores[n % 2], writers[n % 2]
            for i in range(10_000):
                if stop.is_set():
                    return
                out = await store.apply([conversation_record(f"W{n}-{i}-{j}") for j in range(20)])
                published[n] += await writer.publish_written(out.written)

        tasks = [asyncio.create_task(write(n)) for n in range(4)]
        relay = OutboxRelay(stores[1], p2, metrics=Metrics())
        try:
            await asyncio.sleep(1)  # the writers are at it
            await relay.start()
            started = time.monotonic()
            while time.monotonic() - started < 15:
                async with stores[0].engine.connect() as conn:
                    waiting = await conn.execute(select(func.count()).where(outbox.c.id.in_(ids)))
                    if not waiting.scalar_one():
                        break
                await asyncio.sleep(0.1)
            took = time.monotonic() - started
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await relay.stop()
    print(f"the relay published the left rows after {took:.1f} s; writers published {published}")
    assert took < 5, f"the relay waited {took:.1f} s for the shards"
    assert all(published), published


async def test_a_batch_written_in_two_transactions_is_left_to_the_relay(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """A batch bisected around a poison conversation is written in two transactions; another
    writer's version of the same case can be numbered between them. Published together, the
    halves' versions 1 and 3 went before 2; the summed outcome has no rows to publish, so the
    relay sends all three in id order."""
    topics = stores[0].topics
    first = await stores[0].apply([conversation_record("X", metadata={"v": "1"})])
    other = await stores[1].apply([conversation_record("X", metadata={"v": "2"})])
    first.add(await stores[0].apply([conversation_record("X", metadata={"v": "3"})]))
    assert first.written == []
    async with Producer(client_config(kafka, {})) as producer:
        relay = OutboxRelay(stores[0], producer, metrics=Metrics())
        assert await relay.publish_written(first.written) == 0
        assert await relay.publish_written(other.written) == 0  # version 1 waits: not before it
        while await relay.publish_once():
            pass
    records = await _results(kafka, topics.analysis_results, 3)
    assert [r["result_version"] for r in records] == [1, 2, 3]


class _FailsOnce:
    """A producer whose first batch times out; later ones go to Kafka."""

    def __init__(self, producer: Producer) -> None:
        self.producer, self.failed = producer, False

    async def send_batch(self, records: list[Record]) -> None:
        if not self.failed:
            self.failed = True
            raise PublishError("Local: Message timed out", retriable=True)
        await self.producer.send_batch(records)


async def test_after_kafka_failed_a_send_writers_leave_their_rows_to_the_relay_for_a_while(
    kafka: str, stores: tuple[CaseStore, CaseStore]
) -> None:
    """One failed send and the writers stop trying for WRITTEN_BACKOFF_SECONDS (each batch
    would otherwise hold every shard through Kafka's timeout); the relay publishes meanwhile."""
    store = stores[0]
    topics = store.topics
    async with Producer(client_config(kafka, {})) as producer:
        relay = OutboxRelay(store, _FailsOnce(producer), metrics=Metrics())  # type: ignore[arg-type]
        one = await store.apply([conversation_record("A")])
        assert await relay.publish_written(one.written) == 0  # Kafka failed it
        two = await store.apply([conversation_record("B")])
        assert await relay.publish_written(two.written) == 0  # not tried: backing off
        assert relay.producer.failed and await _unpublished(store) == 4  # type: ignore[attr-defined]
        while await relay.publish_once():
            pass
    assert await _unpublished(store) == 0
    records = await _results(kafka, topics.analysis_results, 2)
    assert sorted(r["external_interaction_id"] for r in records) == ["A", "B"]
