"""Handing connectors over: a worker whose partitions are revoked stops polling every revoked
connector at once, before it closes any store (a slow close must not leave another connector
polling after the rebalance completed), a job's import run in progress ends between two
batches with what it announced (:class:`~streams.ownership.ConnectorMoved`), and a database
failure while applying outcomes does not make the worker leave the group."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest.mock import MagicMock

import pytest
from confluent_kafka import TopicPartition
from sqlalchemy.exc import OperationalError

from streams.codec import AvroCodec
from streams.ownership import ConnectorMoved, Ownership
from streams.runner import FILE_OUTCOME, ConnectorContext, ConnectorRunner, OutcomeConsumer
from streams.settings import Settings


class SlowStore:
    """A store whose close takes ``seconds`` (a listing still in flight on a slow link)."""

    def __init__(self, seconds: float, events: list[str], name: str) -> None:
        self.seconds, self.events, self.name = seconds, events, name
        self.description = name

    def close(self) -> None:
        time.sleep(self.seconds)
        self.events.append(f"closed {self.name}")


def _context(name: str, store: SlowStore) -> ConnectorContext:
    settings = MagicMock()
    settings.name = name
    return ConnectorContext(
        tenant="acme",
        settings=settings,
        store=store,  # type: ignore[arg-type]
        poller=MagicMock(),
        executor=ThreadPoolExecutor(1),
        connector_id=name,
    )


def _runner() -> ConnectorRunner:
    ownership = Ownership()
    ownership.add(1, set())  # assigned nothing: every connector belongs to another worker
    return ConnectorRunner(
        Settings(),
        producer=MagicMock(),
        state=MagicMock(),
        codec=MagicMock(),
        metrics=MagicMock(),
        topics=MagicMock(),
        ownership=ownership,
    )


async def test_every_revoked_connector_stops_polling_before_any_store_closes() -> None:
    events: list[str] = []
    runner = _runner()
    runner.reconcile = MagicMock(side_effect=lambda: asyncio.sleep(0))  # type: ignore[method-assign]

    async def polling(name: str) -> None:
        try:
            while True:
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            events.append(f"stopped polling {name}")
            raise

    for name in ("one", "two", "three"):
        ctx = _context(name, SlowStore(0.2, events, name))
        ctx.task = asyncio.create_task(polling(name))
        runner.contexts[("acme", name)] = ctx
    await asyncio.sleep(0.05)
    await runner.apply_ownership()
    assert runner.contexts == {}
    stopped = [e for e in events if e.startswith("stopped")]
    assert len(stopped) == 3
    assert events[:3] == stopped, events  # all three halted before the first (slow) close


async def test_an_import_run_ends_between_batches_when_its_connector_moves() -> None:
    runner = _runner()
    ctx = _context("daily", SlowStore(0, [], "daily"))
    ctx.settings.poll.max_announce_per_poll = 2
    runner.contexts[("acme", "daily")] = ctx
    batches = 0
    release = asyncio.Event()

    async def cycle(_ctx: Any, _announce: bool) -> list[tuple[str, str]]:
        nonlocal batches
        batches += 1
        if batches == 1:
            await release.wait()  # the first batch is in flight when the move comes
        return [(f"f{batches}a", f"/in/{batches}a.csv"), (f"f{batches}b", f"/in/{batches}b.csv")]

    runner._cycle = cycle  # type: ignore[method-assign]
    run = asyncio.create_task(runner.run_import("acme", "daily"))
    await asyncio.sleep(0.05)
    stop = asyncio.create_task(runner._stop_connector(("acme", "daily")))
    await asyncio.sleep(0.05)
    assert not stop.done()  # the store waits for the batch in flight
    release.set()
    with pytest.raises(ConnectorMoved) as moved:
        await run
    await stop
    assert batches == 1  # no batch started after the stop
    assert moved.value.announced == [
        ("f1a", "daily", "/in/1a.csv"),
        ("f1b", "daily", "/in/1b.csv"),
    ]


class FakeOutcomeConsumer:
    """The group consumer's calls the outcome loop makes: one batch per ``consume``, the same
    batch again after a ``seek`` (as Kafka redelivers from the committed offset)."""

    def __init__(self, batch: list[Any]) -> None:
        self.batch = batch
        self.pending = list(batch)
        self.seeks: list[tuple[int, int]] = []
        self.commits = 0
        self.closed = False

    def consume(self, _n: int, _timeout: float) -> list[Any]:
        out, self.pending = self.pending, []
        if not out:
            time.sleep(0.01)
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("outcomes", 0)]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.pending = list(self.batch)

    def commit(self, asynchronous: bool) -> None:
        self.commits += 1

    def close(self) -> None:
        self.closed = True


async def test_a_database_failure_rewinds_the_outcomes_and_keeps_the_group() -> None:
    """Leaving the group on a database error would move every connector of this worker: the
    consumer stays, rewinds to the committed offsets and applies the outcomes again."""
    codec = AvroCodec(Settings().schemas_dir)
    batch = []
    for n in (1, 2):
        outcome = {
            "file_id": f"f{n}",
            "tenant": "acme",
            "connector": "drop",
            "path": f"in/{n}.csv",
            "version_id": f"v{n}",
            "outcome": "processed",
            "rows_accepted": 1,
            "rows_rejected": 0,
            "rejected_by_reason": {},
            "reason": None,
            "decided_at": dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
            "lines_read": 2,
            "records_by_change": {},
        }
        message = MagicMock()
        message.error.return_value = None
        message.value.return_value = codec.encode(FILE_OUTCOME, outcome)
        batch.append(message)
    runner = _runner()
    runner.codec = codec
    recorded: list[str] = []

    async def record_outcome(tenant: str, connector: str, path: str, *_rest: Any) -> str:
        if path == "in/2.csv" and "failed" not in recorded:  # the database fails once
            recorded.append("failed")
            raise OperationalError("UPDATE connector_files", {}, Exception("connection lost"))
        recorded.append(path)
        return "recorded"

    runner.state.record_outcome = record_outcome
    consumer = OutcomeConsumer(runner, {"bootstrap.servers": "unused:9092"}, "group")
    fake = FakeOutcomeConsumer(batch)
    consumer._consumer = fake  # type: ignore[assignment]
    task = asyncio.create_task(consumer._loop_forever())
    deadline = time.monotonic() + 10
    while fake.commits == 0:
        assert time.monotonic() < deadline and not task.done(), recorded
        await asyncio.sleep(0.01)
    consumer._stopping.set()
    await asyncio.wait_for(task, 5)
    consumer._executor.shutdown()
    assert recorded == ["in/1.csv", "failed", "in/1.csv", "in/2.csv"]
    assert fake.seeks == [(0, 7)] and not fake.closed  # rewound, still in the group
