"""Leased work rows in a database table: the claim/renew/release/end rules shared by the durable
queues (recording fetches, transcriptions).

Contract: a queue table has ``case_id`` (primary key), ``status``, ``generation``,
``next_attempt_at``, ``lease_until`` and ``claim``. :func:`claim` gives up to ``limit`` due rows
(``status`` queued, ``next_attempt_at`` passed, no live lease) to one caller under a fresh claim
token and a lease (on PostgreSQL ``FOR UPDATE SKIP LOCKED``: any number of workers, each row to
one). The holder renews the lease while it works (:func:`renew`), gives rows back when it stops
(:func:`release`), and ends a row with :func:`end`, which changes it only while the caller still
holds it and no newer generation was queued meanwhile. A holder that dies leaves a lease that
runs out; the next claim redoes the row.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Table, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

Held = tuple[str, str]
"""A held row: (case id, claim token)."""


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
