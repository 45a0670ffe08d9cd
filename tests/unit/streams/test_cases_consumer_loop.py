"""The cases consumer's batch loop (streams/agents/cases.py) with its Kafka side faked: what it
commits, and that nothing ends it. The real broker: tests/integration/test_cases_consumer.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_streams_failures import FakeProducer, PoisonStore, conversation

from streams.agents import cases as cases_agent
from streams.agents.cases import CasesConsumer, CaseWriter
from streams.codec import AvroCodec
from streams.deadletters import DeadLetters
from streams.media import LocalMediaStore
from streams.metrics import Metrics
from streams.settings import ProcessorSettings
from streams.topics import Topics

CODEC = AvroCodec()


class Msg:
    """What the consumer reads of a librdkafka message."""

    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "t.conversations.v1"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    """Hands out the queued batches (raising where one is an exception) and records commits."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches
        self.committed: list[list[int]] = []

    async def take(self, most: int, wait: float) -> list[Msg]:
        if not self.batches:
            await asyncio.sleep(wait)
            return []
        batch = self.batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return list(batch)

    async def commit(self, msgs: list[Msg]) -> bool:
        self.committed.append([m.offset() for m in msgs])
        return True

    async def close(self) -> None:
        pass


class Relay:
    """Records when each batch's publish starts and ends (``delay`` long)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.delay = 0.0
        self.drain_seconds = 0.5
        self.woken = 0
        self.calls = 0

    def wake(self) -> None:
        self.woken += 1

    async def publish_written(self, written: list[Any]) -> int:
        n, self.calls = self.calls, self.calls + 1
        self.events.append(("start", n))
        await asyncio.sleep(self.delay)
        self.events.append(("end", n))
        return len(written)


def _consumer(tmp_path: Path, fake: FakeConsumer) -> tuple[CasesConsumer, PoisonStore]:
    store = PoisonStore("none")
    metrics = Metrics()
    topics = Topics("t")
    dead = DeadLetters(CODEC, topics, metrics, LocalMediaStore(tmp_path), 1_000_000)
    settings = ProcessorSettings()
    writer = CaseWriter(store, FakeProducer(), dead, metrics, settings)  # type: ignore[arg-type]
    consumer = CasesConsumer({}, topics, CODEC, writer, Relay(), metrics, settings)  # type: ignore[arg-type]
    consumer._consumer = fake  # type: ignore[assignment]
    return consumer, store


def _msgs(first: int, n: int) -> list[Msg]:
    return [
        Msg(i, CODEC.encode("callstream.Conversation", conversation(i)))
        for i in range(first, first + n)
    ]


async def test_a_batch_is_committed_only_if_no_partition_was_revoked_meanwhile(
    tmp_path: Path,
) -> None:
    consumer, store = _consumer(tmp_path, FakeConsumer([]))
    fake = consumer._consumer
    await consumer.handle(_msgs(0, 3), consumer._revocations)
    consumer._on_revoke(None, [])  # type: ignore[arg-type]  # a rebalance while the next is stored
    await consumer.handle(_msgs(3, 2), consumer._revocations - 1)
    assert len(store.stored) == 5  # both stored
    assert fake.committed == [[0, 1, 2]]  # type: ignore[attr-defined]  # the second is redelivered


async def test_a_failing_read_neither_ends_the_loop_nor_skips_a_batch(tmp_path: Path) -> None:
    fake = FakeConsumer([RuntimeError("librdkafka said no"), _msgs(0, 2), _msgs(2, 2)])
    consumer, store = _consumer(tmp_path, fake)
    task = asyncio.create_task(consumer._loop())
    try:
        for _ in range(100):
            if len(fake.committed) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert store.stored == [f"CALL-{i}" for i in range(4)]
    assert fake.committed == [[0, 1], [2, 3]]
    assert not task.done() or task.cancelled()


async def test_a_batch_is_published_in_the_background_and_waited_for_only_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offsets are committed while the batch publishes. The next batch waits for that
    publish at most PUBLISH_WAIT_SECONDS (Kafka may hang for its timeout), then leaves its rows
    to the relay; a publish done within the wait is followed by the next batch's own."""
    monkeypatch.setattr(cases_agent, "PUBLISH_WAIT_SECONDS", 0.1)
    consumer, store = _consumer(tmp_path, FakeConsumer([]))
    relay: Relay = consumer.relay  # type: ignore[assignment]
    fake = consumer._consumer
    relay.delay = 0.5
    await consumer.handle(_msgs(0, 2), consumer._revocations)
    publishing = consumer._publishing
    assert publishing is not None and not publishing.done()  # publishing while ...
    assert fake.committed == [[0, 1]]  # type: ignore[attr-defined]  # ... the offsets are committed
    await consumer.handle(_msgs(2, 2), consumer._revocations)
    assert not publishing.done(), "the second batch waited for the whole publish"
    assert relay.woken == 1 and consumer._publishing is publishing  # its rows: the relay's
    assert fake.committed == [[0, 1], [2, 3]]  # type: ignore[attr-defined]
    await asyncio.wait({publishing})
    relay.delay = 0.05  # within the wait
    await consumer.handle(_msgs(4, 2), consumer._revocations)
    await consumer.handle(_msgs(6, 2), consumer._revocations)
    await consumer.stop()
    assert relay.woken == 1
    assert relay.events == [
        ("start", n) if i % 2 == 0 else ("end", n) for n in range(3) for i in (0, 1)
    ]
    assert len(store.stored) == 8


async def test_stop_lets_a_running_publish_finish_within_the_drain_time(tmp_path: Path) -> None:
    """Stopping the running loop does not cancel the publish it started (a cancel mid-send
    rolls back rows Kafka may already hold: they would be sent twice)."""
    fake = FakeConsumer([_msgs(0, 2), _msgs(2, 2)])
    consumer, _store = _consumer(tmp_path, fake)
    relay: Relay = consumer.relay  # type: ignore[assignment]
    relay.delay = 0.3
    consumer._task = asyncio.create_task(consumer._loop())
    for _ in range(100):
        if not fake.batches and relay.events:  # the second batch waits for the first publish
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await consumer.stop()
    assert relay.events == [("start", 0), ("end", 0)]
    assert fake.committed == [[0, 1]]  # the second batch was stopped: redelivered


async def test_stop_cancels_a_publish_that_outlasts_the_drain_time(tmp_path: Path) -> None:
    """A publish stuck on Kafka is given up at stop: its rows stay in the outbox for the relay."""
    consumer, _store = _consumer(tmp_path, FakeConsumer([]))
    relay: Relay = consumer.relay  # type: ignore[assignment]
    relay.delay = 60
    await consumer.handle(_msgs(0, 2), consumer._revocations)
    await asyncio.sleep(0.05)  # the publish starts
    started = asyncio.get_running_loop().time()
    await consumer.stop()
    assert asyncio.get_running_loop().time() - started < relay.drain_seconds + 1
    assert relay.events == [("start", 0)]
