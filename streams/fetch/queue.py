"""The durable queue of recording fetches: one row per case, in the case store's database.

Contract: a fetch is queued in the very transaction that opens or updates a case with a
conversation marked ``pending`` (:func:`enqueue`, called by :meth:`CaseStore.apply
<streams.cases.store.CaseStore.apply>`), so a case waiting for its recording always has its
fetch, whatever crashes. Workers :func:`claim` due rows under a lease with a claim token (on
PostgreSQL ``FOR UPDATE SKIP LOCKED``; any number of workers, each row to one), renew the lease
while they work, and end a row only after its effect is durable (the conversation with the stored
object, or marked missing, acknowledged by Kafka): :func:`retry_later` or :func:`finish`. A
worker killed mid-fetch leaves a row whose lease runs out; another claim redoes it (the media
store replaces the object under the same key; the republished conversation carries the same
delivery key, so the case store applies it once).

Row ``status``: ``pending`` (queued or being fetched), ``stored``, ``failed`` (dead-lettered).
A pending conversation for a case whose row is ``stored`` from the same URL takes the stored
object at once (:func:`carry_stored`): a re-uploaded file neither fetches again nor opens a
version. One for a ``failed`` row, or a new URL, queues the fetch again (``generation`` + 1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from streams import workqueue
from streams.db import metadata
from streams.fetch.request import PENDING, STORED, recording_state, waiting
from streams.workqueue import utcnow

QUEUED = "pending"
DONE = "stored"
FAILED = "failed"

recording_fetches = Table(
    "recording_fetches",
    metadata,
    Column("case_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("connector", String(64), nullable=False),
    Column("source_url", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),
    Column("claim", String(32)),
    Column("conversation", LargeBinary, nullable=False),  # the pending one, Avro-encoded
    Column("http_status", Integer),
    Column("reason", String(64)),
    Column("message", Text),
    Column("media_key", String(1024)),
    Column("recording_ref", Text),
    Column("sha256", String(64)),
    Column("size", BigInteger),
    Column("media_type", String(255)),
    Column("duration_ms", BigInteger),  # from the media header, when the format says
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_recording_fetches_due", "status", "next_attempt_at"),
    Index("ix_recording_fetches_tenant", "tenant", "status"),
)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True, slots=True)
class Claimed:
    """One fetch a worker holds."""

    case_id: str
    tenant: str
    connector: str
    source_url: str
    generation: int
    attempts: int
    conversation: bytes
    claim: str


async def carry_stored(
    engine: AsyncEngine, items: Sequence[tuple[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Return, per case id of ``items`` (case id, conversation) that waits for a recording
    already stored from the same URL, the fields that give it that recording."""
    wanted = {cid: conv for cid, conv in items if waiting(conv)}
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(recording_fetches).where(
                    recording_fetches.c.case_id.in_(sorted(wanted)),
                    recording_fetches.c.status == DONE,
                )
            )
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        conv = wanted[row.case_id]
        if conv["recording"]["source_url"] != row.source_url:
            continue
        found[row.case_id] = {
            "recording_ref": row.recording_ref,
            "duration_ms": conv.get("duration_ms") or row.duration_ms,
            "recording": recording_state(
                STORED,
                row.source_url,
                media_key=row.media_key,
                sha256=row.sha256,
                size=row.size,
                media_type=row.media_type,
                http_status=row.http_status,
                attempts=row.attempts,
            ),
        }
    return found


async def enqueue(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Queue (or queue again) the fetches of ``rows`` (from :func:`queued_row`) inside the
    caller's transaction (see the module doc)."""
    latest = {row["case_id"]: row for row in rows}  # one case twice in a batch: the last wins
    if not latest:
        return
    existing = {
        r.case_id: r
        for r in (
            await conn.execute(
                select(
                    recording_fetches.c.case_id,
                    recording_fetches.c.status,
                    recording_fetches.c.source_url,
                    recording_fetches.c.generation,
                ).where(recording_fetches.c.case_id.in_(sorted(latest)))
            )
        ).all()
    }
    fresh = [row for cid, row in latest.items() if cid not in existing]
    if fresh:
        await conn.execute(recording_fetches.insert(), fresh)
    for cid, row in latest.items():
        old = existing.get(cid)
        if old is None:
            continue
        stmt = update(recording_fetches).where(recording_fetches.c.case_id == cid)
        if old.status == QUEUED and old.source_url == row["source_url"]:
            # Already queued: the newest conversation is the one to complete, nothing more.
            await conn.execute(
                stmt.values(conversation=row["conversation"], updated_at=row["updated_at"])
            )
            continue
        await conn.execute(
            stmt.values(
                {
                    **{k: v for k, v in row.items() if k not in ("case_id", "created_at")},
                    "generation": old.generation + 1,
                }
            )
        )


def queued_row(
    case_id: str, conversation: dict[str, Any], encoded: bytes, now: dt.datetime
) -> dict[str, Any]:
    """Return the queue row of a pending conversation (``encoded``: its Avro bytes)."""
    source = conversation.get("source") or {}
    return {
        "case_id": case_id,
        "tenant": conversation["tenant"],
        "connector": source.get("connector") or "",
        "source_url": conversation["recording"]["source_url"],
        "status": QUEUED,
        "generation": 1,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None,
        "claim": None,
        "conversation": encoded,
        "http_status": None,
        "reason": None,
        "message": None,
        "media_key": None,
        "recording_ref": None,
        "sha256": None,
        "size": None,
        "media_type": None,
        "duration_ms": None,
        "created_at": now,
        "updated_at": now,
    }


async def claim(engine: AsyncEngine, limit: int, lease: dt.timedelta) -> list[Claimed]:
    """Claim up to ``limit`` due fetches for ``lease`` (see the module doc)."""
    rows = await workqueue.claim(engine, recording_fetches, QUEUED, limit, lease)
    return [
        Claimed(
            r.case_id,
            r.tenant,
            r.connector,
            r.source_url,
            r.generation,
            r.attempts,
            bytes(r.conversation),
            r.claim,
        )
        for r in rows
    ]


async def renew(engine: AsyncEngine, held: Sequence[Claimed], lease: dt.timedelta) -> None:
    """Extend the leases of fetches still in progress."""
    await workqueue.renew(engine, recording_fetches, [(i.case_id, i.claim) for i in held], lease)


async def release(engine: AsyncEngine, held: Sequence[Claimed]) -> None:
    """Give back fetches a stopping worker holds: due at once for the next claim (attempts
    unchanged)."""
    await workqueue.release(engine, recording_fetches, [(i.case_id, i.claim) for i in held])


async def retry_later(
    engine: AsyncEngine,
    item: Claimed,
    *,
    attempts: int,
    at: dt.datetime,
    http_status: int | None,
    reason: str | None,
    message: str | None,
) -> None:
    """Give a claimed fetch back, due again at ``at``."""
    await _end(
        engine,
        item,
        status=QUEUED,
        attempts=attempts,
        next_attempt_at=at,
        http_status=http_status,
        reason=reason,
        message=message,
    )


async def finish(engine: AsyncEngine, item: Claimed, status: str, **fields: Any) -> None:
    """End a claimed fetch as ``stored`` or ``failed`` (after its effect is durable)."""
    await _end(engine, item, status=status, **fields)


async def _end(engine: AsyncEngine, item: Claimed, **values: Any) -> None:
    # A newer conversation re-queued it meanwhile: that generation is left alone.
    await workqueue.end(
        engine, recording_fetches, (item.case_id, item.claim), item.generation, **values
    )


async def state_of(engine: AsyncEngine, tenant: str, case_id: str) -> dict[str, Any] | None:
    """Return a case's fetch row (without the conversation), or None (tests, operators)."""
    columns = [c for c in recording_fetches.c if c.name != "conversation"]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(*columns).where(
                    recording_fetches.c.case_id == case_id, recording_fetches.c.tenant == tenant
                )
            )
        ).first()
    if row is None:
        return None
    found = dict(row._mapping)
    for name in ("next_attempt_at", "lease_until", "created_at", "updated_at"):
        found[name] = _aware(found[name])
    return found


__all__ = ["PENDING", "Claimed", "recording_fetches", "utcnow"]
