"""Stored report files: the bytes in the media store, a ``report_files`` row each, signed links.

Contract:

- :meth:`ReportStore.save` streams each built file into the media store (local folder or S3, as
  ``media`` is configured) under ``reports/<tenant>/<report id>/<name>``, then records every
  file in one transaction; it returns each with its signed download link, valid until
  ``now + ttl`` (the file's ``expires_at``). Should a copy fail, the copies already made are
  deleted and the error propagates (nothing is recorded). Report ids are ``rpt_`` + 24 random
  hex digits.
- :func:`list_reports` / :func:`get_report` are tenant-scoped (another tenant's report is
  :class:`~streams.control.errors.NotFoundError`); their links are signed afresh, expiring
  with the file (never later), and are ``None`` once it has expired.
- :func:`find_report` looks a report up by id alone: only for the download route, after the
  link's signature has been checked.
- :func:`purge_expired` deletes the stored files and rows past ``expires_at`` (the lead's
  scheduled system job calls it); a file already gone counts as deleted.

Blocking media calls run in worker threads; the download is read in chunks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import AsyncGenerator, Sequence
from typing import IO, Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.control.errors import NotFoundError
from streams.control.listing import Key, before, page, utc
from streams.control.secrets import SecretBox
from streams.db import metadata
from streams.errors import MediaStoreError
from streams.exports.links import LinkSigner
from streams.exports.report import ReportFile
from streams.media import MediaStore
from streams.media_s3 import open_media_store
from streams.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "reports"
CHUNK_BYTES = 256 * 1024
#: Expired files removed per purge transaction.
PURGE_BATCH = 500

report_files = Table(
    "report_files",
    metadata,
    Column("id", String(28), primary_key=True),  # rpt_ + 24 hex
    Column("tenant", String(64), nullable=False),
    Column("execution_id", String(32), nullable=True, index=True),
    Column("name", String(255), nullable=False),
    Column("format", String(8), nullable=False),  # csv | xlsx
    Column("content_type", String(128), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("storage_key", String(1024), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Index("ix_report_files_tenant_created", "tenant", "created_at", "id"),
)


class StoredReport(BaseModel):
    """A stored report file and its download link."""

    id: str = Field(description="rpt_ + 24 hex digits.")
    name: str = Field(description="The file name it downloads as.")
    rows: int = Field(description="Data rows (the header not counted).")
    bytes: int
    format: str = Field(description="csv or xlsx.")
    created_at: dt.datetime
    expires_at: dt.datetime = Field(description="The file and its links are gone after this.")
    execution_id: str | None = Field(None, description="The export run that made it.")
    url: str | None = Field(
        None, description="Signed download link, valid until expires_at; null once expired."
    )


def new_report_id() -> str:
    """A fresh report id."""
    return "rpt_" + secrets.token_hex(12)


def storage_key(tenant: str, report_id: str, name: str) -> str:
    """Where a report file is kept in the media store."""
    return f"{PREFIX}/{tenant}/{report_id}/{name}"


def _stored(row: Any, links: LinkSigner, base_url: str, now: dt.datetime) -> StoredReport:
    expires = utc(row.expires_at)
    return StoredReport(
        id=row.id,
        name=row.name,
        rows=row.rows,
        bytes=row.bytes,
        format=row.format,
        created_at=utc(row.created_at),
        expires_at=expires,
        execution_id=row.execution_id,
        url=links.url(base_url, row.id, expires) if expires > now else None,
    )


class ReportStore:
    """Report files in the media store (see the module doc)."""

    def __init__(self, media: MediaStore, links: LinkSigner, base_url: str) -> None:
        self.media = media
        self.links = links
        self.base_url = base_url

    @classmethod
    def from_settings(
        cls, settings: Settings, box: SecretBox, base_url: str, media: MediaStore | None = None
    ) -> ReportStore:
        """The store of ``settings.media`` (or the running ``media`` store), links signed with
        keys derived from ``box`` and based at ``http.public_url`` or else ``base_url``."""
        return cls(
            media if media is not None else open_media_store(settings),
            LinkSigner.from_secrets(box),
            settings.http.public_url or base_url,
        )

    async def save(
        self,
        engine: AsyncEngine,
        tenant: str,
        files: Sequence[ReportFile],
        *,
        execution_id: str | None,
        now: dt.datetime,
        ttl: dt.timedelta,
    ) -> list[StoredReport]:
        """Store ``files`` and record them; return each with its signed link."""
        rows: list[dict[str, Any]] = []
        try:
            for f in files:
                ident = new_report_id()
                key = storage_key(tenant, ident, f.name)
                rows.append(
                    {
                        "id": ident,
                        "tenant": tenant,
                        "execution_id": execution_id,
                        "name": f.name,
                        "format": f.name.rsplit(".", 1)[-1],
                        "content_type": f.content_type,
                        "rows": f.rows,
                        "bytes": f.bytes,
                        "storage_key": key,
                        "created_at": now,
                        "expires_at": now + ttl,
                    }
                )
                await asyncio.to_thread(self._put, key, f)
            if rows:
                async with engine.begin() as conn:
                    await conn.execute(report_files.insert(), rows)
        except BaseException:
            for row in rows:
                try:
                    await asyncio.to_thread(self.media.delete, row["storage_key"])
                except (OSError, MediaStoreError) as exc:  # unrecorded: no purge finds it
                    log.warning("could not delete report file %s: %s", row["storage_key"], exc)
            raise
        return [_stored(_Row(r), self.links, self.base_url, now) for r in rows]

    def _put(self, key: str, f: ReportFile) -> None:
        with f.path.open("rb") as stream:
            self.media.put(key, stream)

    async def open(self, key: str) -> AsyncGenerator[bytes, None]:
        """Open a stored file (FileNotFoundError when it is gone) and return its chunks."""
        stream = await asyncio.to_thread(self.media.open_read, key)
        return self._chunks(stream)

    @staticmethod
    async def _chunks(stream: IO[bytes]) -> AsyncGenerator[bytes, None]:
        try:
            while chunk := await asyncio.to_thread(stream.read, CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(stream.close)


class _Row:
    """Attribute access to a row dict (so saved rows render like fetched ones)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)


async def list_reports(
    engine: AsyncEngine,
    links: LinkSigner,
    base_url: str,
    tenant: str,
    limit: int,
    after: Key | None,
    *,
    now: dt.datetime,
    execution_id: str | None = None,
) -> tuple[list[StoredReport], list[Any] | None]:
    """One page of ``tenant``'s report files, newest first, and the next cursor key."""
    t = report_files.c
    stmt = select(report_files).where(t.tenant == tenant)
    if execution_id is not None:
        stmt = stmt.where(t.execution_id == execution_id)
    cond = before(t.created_at, t.id, after)
    if cond is not None:
        stmt = stmt.where(cond)
    stmt = stmt.order_by(t.created_at.desc(), t.id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    items, nxt = page(rows, limit, lambda r: (r.created_at, r.id))
    return [_stored(r, links, base_url, now) for r in items], nxt


async def reports_of_runs(
    engine: AsyncEngine,
    links: LinkSigner,
    base_url: str,
    tenant: str,
    execution_ids: Sequence[str],
    *,
    now: dt.datetime,
) -> dict[str, list[StoredReport]]:
    """The report files of each of ``tenant``'s runs ``execution_ids`` (one query), by name."""
    if not execution_ids:
        return {}
    t = report_files.c
    stmt = (
        select(report_files)
        .where(t.tenant == tenant, t.execution_id.in_(list(execution_ids)))
        .order_by(t.execution_id, t.name)
    )
    out: dict[str, list[StoredReport]] = {}
    async with engine.connect() as conn:
        for r in await conn.execute(stmt):
            out.setdefault(r.execution_id, []).append(_stored(r, links, base_url, now))
    return out


async def get_report(
    engine: AsyncEngine,
    links: LinkSigner,
    base_url: str,
    tenant: str,
    report_id: str,
    *,
    now: dt.datetime,
) -> StoredReport:
    """One of ``tenant``'s report files with a fresh link; :class:`NotFoundError` otherwise."""
    row = await find_report(engine, report_id)
    if row is None or row.tenant != tenant:
        raise NotFoundError(f"no report {report_id[:40]!r}")
    return _stored(row, links, base_url, now)


async def find_report(engine: AsyncEngine, report_id: str) -> Any:
    """The ``report_files`` row of ``report_id`` (any tenant), or None."""
    async with engine.connect() as conn:
        return (
            await conn.execute(select(report_files).where(report_files.c.id == report_id))
        ).first()


async def purge_expired(engine: AsyncEngine, store: ReportStore, now: dt.datetime) -> int:
    """Delete every report file past its ``expires_at`` and its row; return how many."""
    purged = 0
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(report_files.c.id, report_files.c.storage_key)
                    .where(report_files.c.expires_at <= now)
                    .order_by(report_files.c.expires_at, report_files.c.id)
                    .limit(PURGE_BATCH)
                )
            ).all()
        if not rows:
            return purged
        for row in rows:  # the file first: a row without a file is harmless, the reverse not
            await asyncio.to_thread(store.media.delete, row.storage_key)
        async with engine.begin() as conn:
            await conn.execute(
                delete(report_files).where(report_files.c.id.in_([r.id for r in rows]))
            )
        purged += len(rows)
