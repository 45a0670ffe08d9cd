"""The database: one SQLAlchemy metadata for every table, engines for SQLite and PostgreSQL.

SQLite (the embedded default) and PostgreSQL (production) run the same code; the few
dialect-specific statements (upserts) are built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from sqlalchemy import Connection, MetaData, Table, event, func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

metadata = MetaData()


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine; SQLite gets WAL and a busy timeout for concurrent processes."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _insert(engine: AsyncEngine, table: Table) -> Any:
    return (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)


def upsert(engine: AsyncEngine, table: Table, keys: Sequence[str], columns: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE the other columns, for either dialect."""
    insert = _insert(engine, table)
    return insert.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: insert.excluded[c] for c in columns if c not in keys},
    )


def insert_ignore(engine: AsyncEngine, table: Table, keys: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING, for either dialect."""
    return _insert(engine, table).on_conflict_do_nothing(index_elements=list(keys))


def _add_missing_columns(conn: Connection) -> None:
    """Add nullable columns a newer release declares to tables an older one created.

    A stop-gap until the control plane brings Alembic migrations: only nullable columns without
    defaults are ever added this way, which both SQLite and PostgreSQL do in place.
    """
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(f"table {table.name} lacks the required column {column.name}")
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')


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
            await conn.run_sync(_add_missing_columns)

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
