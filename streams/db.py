"""The database: one SQLAlchemy metadata for every table, engines for SQLite and PostgreSQL.

SQLite (the embedded default) and PostgreSQL (production) run the same code; the few
dialect-specific statements (upserts) are built here. Engines are created with
``hide_parameters=True``: a failing statement's error never shows its bound values (phone
numbers, transcripts), only the SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Self

from sqlalchemy import MetaData, Table, event, func, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

metadata = MetaData()


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine that never logs bound values; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_async_engine(
        url, pool_size=5, max_overflow=5, pool_pre_ping=True, hide_parameters=True
    )


def dialect_insert(engine: AsyncEngine, table: Table) -> Any:
    """An INSERT with the dialect's ``on_conflict_*`` methods (PostgreSQL or SQLite)."""
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)


_insert = dialect_insert


def upsert(engine: AsyncEngine, table: Table, keys: Sequence[str], columns: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE the other columns, for either dialect."""
    insert = _insert(engine, table)
    return insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: insert.excluded[c] for c in columns if c not in keys},
    )


async def add_missing_columns(conn: AsyncConnection, table: Table) -> list[str]:
    """Add ``table``'s nullable columns that an existing database lacks; return their names.

    ``create_all`` creates missing tables but never alters existing ones: this keeps a database
    from an earlier release usable when a table gains optional columns.
    """

    def existing(sync_conn: Any) -> set[str]:
        return {c["name"] for c in inspect(sync_conn).get_columns(table.name)}

    present = await conn.run_sync(existing)
    added = []
    for column in table.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise RuntimeError(f"table {table.name} lacks the required column {column.name}")
        kind = column.type.compile(dialect=conn.dialect)
        await conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
        added.append(column.name)
    return added


def insert_ignore(engine: AsyncEngine, table: Table, keys: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING, for either dialect."""
    return _insert(engine, table).on_conflict_do_nothing(index_elements=list(keys))


class Database:
    """Owns an async engine: ``start()`` connects and creates missing tables, ``stop()`` closes.

    The stores (:class:`~streams.state.ConnectorState`, :class:`~streams.cases.store.CaseStore`)
    build on it; they share one schema (:data:`metadata`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    async def start(self) -> None:
        """Connect and create the tables that do not exist yet."""
        self._engine = create_engine(self.url)
        async with self._engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            for table in metadata.sorted_tables:
                added = await add_missing_columns(conn, table)
                if added:
                    log.info("%s: added columns %s", table.name, ", ".join(added))

    async def stop(self) -> None:
        """Close the connection pool."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def engine(self) -> AsyncEngine:
        """The engine; only after :meth:`start`."""
        if self._engine is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._engine

    async def count_rows(self, table: Table, tenant: str | None = None) -> int:
        """Count a table's rows, optionally only one tenant's."""
        stmt = select(func.count()).select_from(table)
        if tenant is not None:
            stmt = stmt.where(table.c.tenant == tenant)
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())
