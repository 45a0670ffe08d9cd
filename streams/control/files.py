"""Announced file versions of the caller's tenant, with their outcome and counts.

Two sources, one list: ``connector_files`` (the connector state: the current version of every
announced path, processed or not yet) and ``file_outcomes`` (the processors' verdict and counts
for every version they judged, including versions since replaced). Newest first by the time
the version was announced (or, for a replaced version, decided), then file id.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Integer, Text, cast, func, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.cases.store import file_outcomes
from streams.control.listing import Key, before, page, utc
from streams.state import connector_files

FileOutcome = Literal["pending", "processing", "processed", "partial", "invalid", "incomplete"]


class AnnouncedFile(BaseModel):
    """One announced file version."""

    file_id: str = Field(description="Deterministic id of the version (lineage, dead letters).")
    connector: str
    path: str
    current: bool = Field(description="Still the path's current version on the source.")
    version: int | None = Field(None, description="Per-path version (current versions).")
    size: int | None = None
    at: dt.datetime = Field(description="Announced (or, for a replaced version, decided).")
    outcome: FileOutcome = Field(description="pending: not judged yet.")
    rows_accepted: int | None = None
    rows_rejected: int | None = None
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    reason: str | None = None
    decided_at: dt.datetime | None = None
    cleanup_action: str | None = None
    moved_to: str | None = None


def _when(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite, through a UNION: the stored text
        value = dt.datetime.fromisoformat(value)
    return utc(value)


def _at(value: Any) -> dt.datetime:
    when = _when(value)
    if when is None:  # both columns of the union are NOT NULL
        raise ValueError("a file version without a time")
    return when


async def list_files(
    engine: AsyncEngine,
    tenant: str,
    limit: int,
    after: Key | None,
    *,
    connector: str | None = None,
    outcome: str | None = None,
    since: dt.datetime | None = None,
) -> tuple[list[AnnouncedFile], list[Any] | None]:
    """One page of ``tenant``'s file versions, newest first, and the next cursor key."""
    cf, fo = connector_files.c, file_outcomes.c
    current = select(
        cf.file_id,
        cf.connector,
        cf.path,
        literal(1).label("current"),
        cf.version,
        cf.size,
        cf.announced_at.label("at"),
        func.coalesce(fo.outcome, "pending").label("outcome"),
        fo.rows_accepted,
        fo.rows_rejected,
        fo.rejected_by_reason,
        fo.reason,
        fo.decided_at,
        cf.cleanup_action,
        cf.moved_to,
    ).select_from(connector_files.outerjoin(file_outcomes, fo.file_id == cf.file_id))
    current = current.where(cf.tenant == tenant)
    replaced = select(
        fo.file_id,
        fo.connector,
        fo.path,
        literal(0).label("current"),
        cast(null(), Integer).label("version"),
        cast(null(), BigInteger).label("size"),
        fo.decided_at.label("at"),
        fo.outcome,
        fo.rows_accepted,
        fo.rows_rejected,
        fo.rejected_by_reason,
        fo.reason,
        fo.decided_at,
        cast(null(), Text).label("cleanup_action"),
        cast(null(), Text).label("moved_to"),
    ).where(
        fo.tenant == tenant,
        fo.file_id.not_in(select(cf.file_id).where(cf.tenant == tenant)),
    )
    u = union_all(current, replaced).subquery()
    stmt = select(u)
    if connector is not None:
        stmt = stmt.where(u.c.connector == connector)
    if outcome is not None:
        stmt = stmt.where(u.c.outcome == outcome)
    if since is not None:
        stmt = stmt.where(u.c.at >= utc(since))
    cond = before(u.c.at, u.c.file_id, after)
    if cond is not None:
        stmt = stmt.where(cond)
    stmt = stmt.order_by(u.c.at.desc(), u.c.file_id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    items, nxt = page(rows, limit, lambda r: (_at(r.at), r.file_id))
    return [
        AnnouncedFile(
            file_id=r.file_id,
            connector=r.connector,
            path=r.path,
            current=bool(r.current),
            version=r.version,
            size=r.size,
            at=_at(r.at),
            outcome=r.outcome,
            rows_accepted=r.rows_accepted,
            rows_rejected=r.rows_rejected,
            rejected_by_reason=json.loads(r.rejected_by_reason or "{}"),
            reason=r.reason,
            decided_at=_when(r.decided_at),
            cleanup_action=r.cleanup_action,
            moved_to=r.moved_to,
        )
        for r in items
    ], nxt
