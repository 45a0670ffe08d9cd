"""Handing connectors over: a worker whose partitions are revoked stops polling every revoked
connector at once, before it closes any store (a slow close must not leave another connector
polling after the rebalance completed), and a job's import run in progress ends between two
batches with what it announced (:class:`~streams.ownership.ConnectorMoved`)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest.mock import MagicMock

import pytest

from streams.ownership import ConnectorMoved, Ownership
from streams.runner import ConnectorContext, ConnectorRunner
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
