"""What the source-type files did: the latest content of each record, and each file's job.

``source_records`` holds, per (tenant, source type, primary key), the content hash of the
record's latest version, the date and file version that last supplied it, and what that file
version did to it (``created``, ``updated``, ``unchanged``, ``deleted``). ``source_files`` holds
one row per file version read (the job of ``GET .../job?date=``): its date, schema version, the
first rejection's message and the counts by change.

Exactly-once effects on at-least-once input: :meth:`SourceStore.apply_chunk` decides every row's
change and writes it in one transaction *before* the chunk is published. A row whose record was
last written by this same file version and row is a replay (the chunk was decided, but its
publication or progress was not recorded): its recorded change is returned again, so it is
published again (same key and value) and counted once. Another row of the same file version
with the same key is a duplicate (rejected as ``duplicate_key``). Counts are never accumulated:
:meth:`SourceStore.finish` counts the rows each change holds for the file version.

Re-uploads (seed 002 "File Update"): a new version of a date's file overwrites that date's
records. Rows whose hash did not change are ``unchanged`` (not published again); changed rows
are ``updated``. When the new version is accepted whole (every row valid),
records whose latest version came from an older version of the *same date's* file and that the
new version no longer holds are ``deleted``: marked so here and published as tombstones. A
record that a later date's file supplied meanwhile belongs to that date and is left alone; a
partly rejected version deletes nothing (a rejected row may be a record that still exists).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    and_,
    func,
    select,
    update,
)

from streams.db import Database, metadata, upsert

CHANGES = ("created", "updated", "unchanged", "deleted")

source_records = Table(
    "source_records",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("source_type", String(64), primary_key=True),
    Column("primary_key", String(512), primary_key=True),
    Column("file_date", Date, nullable=False),  # date of the file that last supplied it
    Column("content_hash", String(64)),  # null once deleted
    Column("file_id", String(32), nullable=False),  # file version that last touched it
    Column("row", BigInteger),  # its row in that version (null for a deletion)
    Column("change", String(16), nullable=False),  # what that version did: CHANGES
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_source_records_date", "tenant", "source_type", "file_date"),
    Index("ix_source_records_file", "file_id"),
)

source_files = Table(
    "source_files",
    metadata,
    Column("file_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("source_type", String(64), nullable=False),
    Column("file_date", Date, nullable=False),
    Column("file_name", String(100), nullable=False),
    Column("connector", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("first_error", String(2000)),  # message of the first rejection (row or file)
    Column("records_created", BigInteger, nullable=False),
    Column("records_updated", BigInteger, nullable=False),
    Column("records_unchanged", BigInteger, nullable=False),
    Column("records_deleted", BigInteger, nullable=False),
    Index("ix_source_files_job", "tenant", "source_type", "file_date", "started_at"),
)


def utcnow() -> dt.datetime:
    """Return the current time, timezone-aware."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class SourceJob:
    """The file version being read (identifies its ``source_files`` row)."""

    file_id: str
    tenant: str
    source_type: str
    date: dt.date
    file_name: str
    connector: str
    path: str
    schema_version: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """One valid row of a chunk."""

    row: int
    key: str
    content_hash: str


class SourceStore:
    """Record hashes and file jobs in the case store's database (see the module doc)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, job: SourceJob) -> None:
        """Record that a file version is being read (idempotent)."""
        row = {
            "file_id": job.file_id,
            "tenant": job.tenant,
            "source_type": job.source_type,
            "file_date": job.date,
            "file_name": job.file_name,
            "connector": job.connector,
            "path": job.path,
            "schema_version": job.schema_version,
            "started_at": utcnow(),
            "records_created": 0,
            "records_updated": 0,
            "records_unchanged": 0,
            "records_deleted": 0,
        }
        engine = self.db.engine
        stmt = upsert(engine, source_files, ["file_id"], ["schema_version"])
        async with engine.begin() as conn:
            await conn.execute(stmt, [row])

    async def note_error(self, file_id: str, message: str) -> None:
        """Keep ``message`` as the file's first error unless it has one."""
        async with self.db.engine.begin() as conn:
            await _note_error(conn, file_id, message)

    async def apply_chunk(
        self, job: SourceJob, rows: Sequence[Incoming], first_error: str | None
    ) -> list[str]:
        """Decide and record each row's change: one of :data:`CHANGES` or ``duplicate``."""
        keys = sorted({r.key for r in rows})
        now = utcnow()
        engine = self.db.engine
        async with engine.begin() as conn:
            if first_error is not None:
                await _note_error(conn, job.file_id, first_error)
            found = await conn.execute(
                select(source_records).where(
                    source_records.c.tenant == job.tenant,
                    source_records.c.source_type == job.source_type,
                    source_records.c.primary_key.in_(keys),
                )
            )
            known: dict[str, Any] = {r.primary_key: r for r in found}
            mine: dict[str, int] = {}  # keys written by this chunk -> row
            changes: list[str] = []
            writes: list[dict[str, Any]] = []
            for r in rows:
                prior = known.get(r.key)
                if r.key in mine:
                    changes.append("duplicate")
                    continue
                if prior is not None and prior.file_id == job.file_id:
                    # This version wrote the key before: a replay of that row, or a duplicate.
                    changes.append(prior.change if prior.row == r.row else "duplicate")
                    continue
                if prior is None or prior.content_hash is None:
                    change = "created"
                elif prior.content_hash == r.content_hash:
                    change = "unchanged"
                else:
                    change = "updated"
                changes.append(change)
                mine[r.key] = r.row
                writes.append(
                    {
                        "tenant": job.tenant,
                        "source_type": job.source_type,
                        "primary_key": r.key,
                        "file_date": job.date,
                        "content_hash": r.content_hash,
                        "file_id": job.file_id,
                        "row": r.row,
                        "change": change,
                        "updated_at": now,
                    }
                )
            if writes:
                stmt = upsert(
                    engine,
                    source_records,
                    ["tenant", "source_type", "primary_key"],
                    list(writes[0]),
                )
                await conn.execute(stmt, writes)
        return changes

    async def delete_missing(self, job: SourceJob) -> list[str]:
        """Mark the date's records this version no longer holds deleted; return their keys
        (including those marked by an earlier attempt of this version, to publish again)."""
        c = source_records.c
        mine = and_(c.tenant == job.tenant, c.source_type == job.source_type)
        async with self.db.engine.begin() as conn:
            stale = and_(
                mine,
                c.file_date == job.date,
                c.file_id != job.file_id,
                c.content_hash.is_not(None),
            )
            await conn.execute(
                update(source_records)
                .where(stale)
                .values(
                    content_hash=None,
                    file_id=job.file_id,
                    row=None,
                    change="deleted",
                    updated_at=utcnow(),
                )
            )
            rows = await conn.execute(
                select(c.primary_key)
                .where(mine, c.file_id == job.file_id, c.change == "deleted")
                .order_by(c.primary_key)
            )
            return [r.primary_key for r in rows]

    async def finish(self, job: SourceJob) -> dict[str, int]:
        """Count the file version's records by change and keep the counts with its job."""
        c = source_records.c
        async with self.db.engine.begin() as conn:
            rows = await conn.execute(
                select(c.change, func.count())
                .where(
                    c.tenant == job.tenant,
                    c.source_type == job.source_type,
                    c.file_id == job.file_id,
                )
                .group_by(c.change)
            )
            counts = dict.fromkeys(CHANGES, 0)
            counts.update({change: int(n) for change, n in rows})
            await conn.execute(
                update(source_files)
                .where(source_files.c.file_id == job.file_id)
                .values(**{f"records_{k}": v for k, v in counts.items()})
            )
        return counts


async def _note_error(conn: Any, file_id: str, message: str) -> None:
    await conn.execute(
        update(source_files)
        .where(source_files.c.file_id == file_id, source_files.c.first_error.is_(None))
        .values(first_error=message[:2000])
    )


async def latest_job(conn: Any, tenant: str, source_type: str, date: dt.date) -> Any | None:
    """Return the latest ``source_files`` row of a tenant's source type and date, or None."""
    row = (
        await conn.execute(
            select(source_files)
            .where(
                source_files.c.tenant == tenant,
                source_files.c.source_type == source_type,
                source_files.c.file_date == date,
            )
            .order_by(source_files.c.started_at.desc(), source_files.c.file_id.desc())
            .limit(1)
        )
    ).first()
    return row
