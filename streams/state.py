"""Durable connector state in the database: announced file versions and their clean-up.

Why the database and not a compacted topic: the case store (SQLite embedded, PostgreSQL in
production) is already there and transactional; one row per (tenant, connector, path) is cheap
to load at start (100,000 rows in well under a second) and easy to inspect with SQL when an
operator asks "did we get yesterday's file?".

Ordering contract with the runner: a version is recorded here only *after* Kafka acknowledged its
FileArrival event. A crash in between re-announces that version on restart (a duplicate event,
absorbed downstream by ``file_id``), never loses it.

Clean-up is durable too (the row of the path's current version carries it): the outcome
consumer records downstream's verdict (``outcome``, ``decided_at``, ``cleanup_stage`` pending or
recheck) and commits its offset; the connector's poll loop applies the steps when due and
records each (``cleanup_stage``, ``cleanup_action``, ``cleaned_at``, ``moved_to``). A restart
loads all of it back into :class:`~connectors.poller.KnownFile` and carries on.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    Text,
    case,
    or_,
    select,
    update,
)

from connectors.poller import (
    Candidate,
    CleanupStage,
    CleanupStep,
    KnownFile,
    Outcome,
    stage_after,
)
from streams.db import Database, dialect_insert, metadata, utc

log = logging.getLogger(__name__)

connector_files = Table(
    "connector_files",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("connector", String(64), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("version_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("checksum", String(128)),
    Column("file_id", String(64), nullable=False),
    Column("announced_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(16)),
    Column("decided_at", DateTime(timezone=True)),
    Column("cleanup_stage", String(16)),
    Column("cleanup_action", String(32)),
    Column("cleaned_at", DateTime(timezone=True)),
    Column("moved_to", Text),
)


class OutcomeRecord(StrEnum):
    """What :meth:`ConnectorState.record_outcome` did with a verdict."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    """This verdict (or a newer one) is already recorded for the version."""
    NOT_CURRENT = "not_current"
    """The path's recorded version is another one (or none): nothing to clean up."""


def _seconds(value: dt.datetime | None) -> float | None:
    return None if value is None else utc(value).timestamp()


def _datetime(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)


class ConnectorState(Database):
    """Reads and writes ``connector_files``; one instance per process, shared by connectors."""

    async def load_known(self, tenant: str, connector: str) -> dict[str, KnownFile]:
        """Return every announced path of a connector with its last version and clean-up."""
        t = connector_files.c
        stmt = select(
            t.path,
            t.version_id,
            t.version,
            t.size,
            t.mtime,
            t.outcome,
            t.decided_at,
            t.cleanup_stage,
            t.cleaned_at,
            t.moved_to,
        ).where(t.tenant == tenant, t.connector == connector)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {
            r.path: KnownFile(
                r.version_id,
                r.version,
                r.size,
                r.mtime,
                outcome=Outcome(r.outcome) if r.outcome else None,
                decided_at=_seconds(r.decided_at),
                stage=CleanupStage(r.cleanup_stage) if r.cleanup_stage else None,
                cleaned_at=_seconds(r.cleaned_at),
                moved_to=r.moved_to,
            )
            for r in rows
        }

    async def record_announced(
        self,
        tenant: str,
        connector: str,
        announced: Sequence[tuple[Candidate, str]],
        at: dt.datetime,
    ) -> None:
        """Upsert the announced versions ``(candidate, file_id)`` in one transaction.

        Clean-up state starts over; a re-announced unchanged version keeps its recorded verdict
        (so that verdict, redelivered late, is recognised as already applied).
        """
        if not announced:
            return
        rows = [
            {
                "tenant": tenant,
                "connector": connector,
                "path": c.file.path,
                "version_id": c.file.version_id,
                "version": c.version,
                "size": c.file.size,
                "mtime": c.file.mtime,
                "checksum": c.file.etag,
                "file_id": file_id,
                "announced_at": at,
                "outcome": None,
                "decided_at": None,
                "cleanup_stage": None,
                "cleanup_action": None,
                "cleaned_at": None,
                "moved_to": None,
            }
            for c, file_id in announced
        ]
        insert = dialect_insert(self.engine, connector_files)
        same = connector_files.c.version_id == insert.excluded.version_id
        keys = ("tenant", "connector", "path")
        set_: dict[str, Any] = {c: insert.excluded[c] for c in rows[0] if c not in keys}
        for kept in ("outcome", "decided_at"):
            set_[kept] = case((same, connector_files.c[kept]), else_=None)
        stmt = insert.on_conflict_do_update(index_elements=list(keys), set_=set_)
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def record_outcome(
        self,
        tenant: str,
        connector: str,
        path: str,
        version_id: str,
        outcome: Outcome,
        decided_at: dt.datetime,
    ) -> OutcomeRecord:
        """Record a verdict on the path's current version unless it is stale or known already."""
        t = connector_files.c
        decided_at = utc(decided_at)
        where = (
            t.tenant == tenant,
            t.connector == connector,
            t.path == path,
        )
        stmt = (
            update(connector_files)
            .where(
                *where,
                t.version_id == version_id,
                or_(t.decided_at.is_(None), t.decided_at < decided_at),
            )
            .values(
                outcome=str(outcome),
                decided_at=decided_at,
                cleanup_stage=str(stage_after(outcome)),
            )
        )
        async with self.engine.begin() as conn:
            if (await conn.execute(stmt)).rowcount:
                return OutcomeRecord.RECORDED
            current = (await conn.execute(select(t.version_id).where(*where))).scalar_one_or_none()
        return OutcomeRecord.DUPLICATE if current == version_id else OutcomeRecord.NOT_CURRENT

    async def record_cleanup(self, tenant: str, connector: str, step: CleanupStep) -> None:
        """Record a clean-up step (only if its version is still the recorded one)."""
        t = connector_files.c
        stmt = (
            update(connector_files)
            .where(
                t.tenant == tenant,
                t.connector == connector,
                t.path == step.path,
                t.version_id == step.version_id,
            )
            .values(
                cleanup_action=str(step.action),
                cleanup_stage=str(step.stage) if step.stage else None,
                cleaned_at=_datetime(step.cleaned_at),
                moved_to=step.moved_to,
            )
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def count(self, tenant: str | None = None) -> int:
        """Count recorded file versions (for status pages and tests)."""
        return await self.count_rows(connector_files, tenant)
