"""Bulk inserts on PostgreSQL: one ``INSERT ... SELECT FROM unnest(...)`` statement per table.

A batch of rows goes to the server as one array per column (asyncpg's binary array encoding),
in one round trip and one statement, whatever the batch size; SQLAlchemy's executemany would
build and bind every row's parameters in Python. The statement runs on the asyncpg connection
under the caller's SQLAlchemy connection, so inside the caller's transaction: the caller must
have executed a statement in that transaction first (SQLAlchemy begins the asyncpg transaction
lazily). A unique violation raises :class:`DuplicateRow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, LargeBinary, String, Table
from sqlalchemy import Text as TextType
from sqlalchemy.ext.asyncio import AsyncConnection

#: PostgreSQL array element type of each SQLAlchemy column type the case tables use (most
#: specific first: BigInteger is an Integer).
_PG_TYPES: tuple[tuple[type[Any], str], ...] = (
    (BigInteger, "int8"),
    (Integer, "int4"),
    (Float, "float8"),
    (Boolean, "bool"),
    (LargeBinary, "bytea"),
    (DateTime, "timestamptz"),
    (String, "text"),
    (TextType, "text"),
)


class DuplicateRow(Exception):
    """A bulk insert hit a unique key another transaction wrote (the batch is planned again)."""


def _pg_type(table: Table, column: str) -> str:
    kind = table.c[column].type
    for sa_type, pg in _PG_TYPES:
        if isinstance(kind, sa_type):
            return pg
    raise TypeError(f"{table.name}.{column}: no bulk type for {kind!r}")


def statement(table: Table, columns: Sequence[str], on_conflict: str = "") -> str:
    """The INSERT of ``columns`` from one array parameter per column (``$1`` ...)."""
    names = ", ".join(f'"{c}"' for c in columns)
    arrays = ", ".join(f"${i}::{_pg_type(table, c)}[]" for i, c in enumerate(columns, 1))
    # Only the table's own identifiers and the fixed type names above: no value is inlined.
    return f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}"  # noqa: S608


def do_update(keys: Sequence[str], columns: Sequence[str]) -> str:
    """``ON CONFLICT (keys) DO UPDATE`` every column of ``columns`` not in ``keys``."""
    sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in keys)
    return f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"


def do_nothing(keys: Sequence[str]) -> str:
    """``ON CONFLICT (keys) DO NOTHING``."""
    return f"ON CONFLICT ({', '.join(keys)}) DO NOTHING"


async def insert(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    on_conflict: str = "",
) -> None:
    """Insert ``rows`` (dicts with the same keys; ``columns`` picks some) in one statement."""
    if not rows:
        return
    names = list(columns if columns is not None else rows[0])
    arrays = [[row[c] for row in rows] for c in names]
    driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
    try:
        await driver.execute(statement(table, names, on_conflict), *arrays)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateRow(f"{table.name}: {exc.constraint_name}") from exc
