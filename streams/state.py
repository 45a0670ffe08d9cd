"""Durable connector state in the database: which file versions were announced and cleaned.

Why the database and not a compacted topic: the case store (SQLite embedded, PostgreSQL in
production) is already there and transactional; one row per (tenant, connector, path) is cheap
to load at start (100,000 rows in well under a second) and easy to inspect with SQL when an
operator asks "did we get yesterday's file?".

Ordering contract with the runner: a version is recorded here only *after* Kafka acknowledged its
FileArrival event. A crash in between re-announces that version on restart (a duplicate event,
absorbed downstream by ``file_id``), never loses it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    select,
    update,
)

from connectors.poller import Candidate, CleanupAction, KnownFile
from streams.db import Database, metadata, upsert

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
    Column("cleanup_action", String(32)),
    Column("cleaned_at", DateTime(timezone=True)),
)

_CLEANED = {
    CleanupAction.MOVED_PROCESSED,
    CleanupAction.MOVED_INVALID,
    CleanupAction.DELETED,
    CleanupAction.MISSING,
}


class ConnectorState(Database):
    """Reads and writes ``connector_files``; one instance per process, shared by connectors."""

    async def load_known(self, tenant: str, connector: str) -> dict[str, KnownFile]:
        """Return every announced path of a connector with its last version."""
        t = connector_files.c
        stmt = select(t.path, t.version_id, t.version, t.cleaned_at).where(
            t.tenant == tenant, t.connector == connector
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return {r.path: KnownFile(r.version_id, r.version, r.cleaned_at is not None) for r in rows}

    async def record_announced(
        self,
        tenant: str,
        connector: str,
        announced: Sequence[tuple[Candidate, str]],
        at: dt.datetime,
    ) -> None:
        """Upsert the announced versions ``(candidate, file_id)`` in one transaction."""
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
                "cleanup_action": None,
                "cleaned_at": None,
            }
            for c, file_id in announced
        ]
        stmt = upsert(self.engine, connector_files, ["tenant", "connector", "path"], list(rows[0]))
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def record_cleanup(
        self,
        tenant: str,
        connector: str,
        path: str,
        version_id: str,
        action: CleanupAction,
        at: dt.datetime,
    ) -> None:
        """Note what clean-up did to a version (only if it is still the recorded one)."""
        t = connector_files.c
        stmt = (
            update(connector_files)
            .where(
                t.tenant == tenant,
                t.connector == connector,
                t.path == path,
                t.version_id == version_id,
            )
            .values(cleanup_action=str(action), cleaned_at=at if action in _CLEANED else None)
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def count(self, tenant: str | None = None) -> int:
        """Count recorded file versions (for status pages and tests)."""
        return await self.count_rows(connector_files, tenant)
