"""Leased work rows in a database table: the claim/renew/release/end rules shared by the durable
queues (recording fetches, transcriptions).

Contract: a queue table has ``case_id`` (primary key), ``status``, ``generation``,
``next_attempt_at``, ``lease_until`` and ``claim``. :func:`claim` gives up to ``limit`` due rows
(``status`` queued, ``next_attempt_at`` passed, no live lease) to one caller under a fresh claim
token and a lease (on PostgreSQL ``FOR UPDATE SKIP LOCKED``: any number of workers, each row to
one). The holder renews the lease while it works (:func:`renew`), gives rows back when it stops
(:func:`release`), and ends a row with :func:`end`, which changes it only while the caller still
holds it and no newer generation was queued meanwhile. A holder that dies leaves a lease that
runs out; the next claim redoes the row. :class:`LeasedWorker` is the claim loop of a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Row, Table, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

Held = tuple[str, str]
"""A held row: (case id, claim token)."""


class Claimable(Protocol):
    """What a worker holds of a claimed row."""

    @property
    def case_id(self) -> str: ...


T = TypeVar("T", bound=Claimable)


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


async def claim(
    engine: AsyncEngine, table: Table, queued: str, limit: int, lease: dt.timedelta
) -> list[Row[Any]]:
    """Claim up to ``limit`` due rows of ``table`` for ``lease``; return them whole."""
    if limit <= 0:
        return []
    now = utcnow()
    token = uuid.uuid4().hex
    c = table.c
    free = or_(c.lease_until.is_(None), c.lease_until < now)
    due = and_(c.status == queued, c.next_attempt_at <= now, free)
    async with engine.begin() as conn:
        pick = select(c.case_id).where(due).order_by(c.next_attempt_at).limit(limit)
        if engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        ids = list((await conn.execute(pick)).scalars())
        if not ids:
            return []
        await conn.execute(
            update(table)
            .where(c.case_id.in_(ids), due)
            .values(lease_until=now + lease, claim=token)
        )
        return list((await conn.execute(select(table).where(c.claim == token))).all())


async def renew(
    engine: AsyncEngine, table: Table, held: Sequence[Held], lease: dt.timedelta
) -> None:
    """Extend the leases of rows still being worked on."""
    if not held:
        return
    until = utcnow() + lease
    async with engine.begin() as conn:
        for case_id, token in held:
            await conn.execute(
                update(table)
                .where(table.c.case_id == case_id, table.c.claim == token)
                .values(lease_until=until)
            )


async def release(engine: AsyncEngine, table: Table, held: Sequence[Held]) -> None:
    """Give back rows a stopping worker holds: due at once for the next claim."""
    if not held:
        return
    async with engine.begin() as conn:
        for case_id, token in held:
            await conn.execute(
                update(table)
                .where(table.c.case_id == case_id, table.c.claim == token)
                .values(lease_until=None, claim=None)
            )


async def end(
    engine: AsyncEngine,
    table: Table,
    held: Held,
    generation: int,
    *conditions: Any,
    **values: Any,
) -> bool:
    """Set ``values`` on a held row and drop its lease, unless a newer generation was queued
    meanwhile or ``conditions`` (extra WHERE clauses) fail; return whether the row changed."""
    case_id, token = held
    c = table.c
    async with engine.begin() as conn:
        done = await conn.execute(
            update(table)
            .where(c.case_id == case_id, c.claim == token, c.generation == generation, *conditions)
            .values(lease_until=None, claim=None, updated_at=utcnow(), **values)
        )
    return bool(done.rowcount)


class LeasedWorker(Generic[T]):
    """The claim loop of a durable queue's worker: claims up to ``slots`` due rows, runs each
    in its own task (:meth:`work`, which must not raise for the row's own failures), renews the
    leases of the rows it holds every third of ``lease``, polls every ``poll_seconds`` (or at
    once after :meth:`wake`), and on :meth:`stop` cancels what runs and gives the rows back.
    A database outage is logged and retried; the rows' leases cover a worker that dies."""

    name = "queue"

    def __init__(self, slots: int, poll_seconds: float, lease_seconds: float) -> None:
        self.slots = slots
        self.poll_seconds = poll_seconds
        self.lease = dt.timedelta(seconds=lease_seconds)
        self._held: dict[str, T] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def claim(self, limit: int) -> list[T]:
        """Claim up to ``limit`` due rows for :attr:`lease`."""
        raise NotImplementedError

    async def renew(self, held: list[T]) -> None:
        """Extend the leases of ``held``."""
        raise NotImplementedError

    async def release(self, held: list[T]) -> None:
        """Give ``held`` back (due at once for the next claim)."""
        raise NotImplementedError

    async def work(self, item: T) -> None:
        """Do one claimed row."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start claiming."""
        self._loop_task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Stop: rows in flight are abandoned and given back (after a kill, their leases run
        out instead)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        held = list(self._held.values())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.release(held)
        except Exception:  # the database is gone: the leases run out instead
            log.warning("%s: cannot give back %d rows", self.name, len(held), exc_info=True)

    def wake(self) -> None:
        """Look for due rows now."""
        self._wake.set()

    async def _loop(self) -> None:
        renewed = time.monotonic()
        while True:
            try:
                for item in await self.claim(self.slots - len(self._tasks)):
                    self._held[item.case_id] = item
                    task = asyncio.create_task(self._run(item), name=f"{self.name}-{item.case_id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if time.monotonic() - renewed > self.lease.total_seconds() / 3:
                    await self.renew(list(self._held.values()))
                    renewed = time.monotonic()
            except Exception:  # the database is down: keep trying
                log.warning("%s: cannot claim work (retrying)", self.name, exc_info=True)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _run(self, item: T) -> None:
        try:
            await self.work(item)
        finally:
            self._held.pop(item.case_id, None)
            self.wake()  # a slot is free
