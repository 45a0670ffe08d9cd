"""Bulk inserts on PostgreSQL: one binary ``COPY`` per table, or one ``INSERT ... SELECT FROM
unnest(...)`` where a conflict clause is needed.

A batch of rows goes to the server in one round trip and one statement, whatever the batch size;
SQLAlchemy's executemany would build and bind every row's parameters in Python. ``COPY ... FROM
STDIN (FORMAT binary)`` (asyncpg's ``copy_records_to_table``) costs the least on both sides: on
the client each value goes through its type's codec once, where asyncpg's array encoding of the
``unnest`` form asks ``collections.abc`` whether every element is itself an array (a quarter of
the cases agent's client CPU, measured). ``COPY`` has no ``ON CONFLICT``, so an insert with one
tries ``COPY`` under a savepoint and, only if a row conflicts, rolls back to it and runs the
``unnest`` statement with the clause: the outcome is that statement's either way.

Statements run on the asyncpg connection under the caller's SQLAlchemy connection, so inside the
caller's transaction: the caller must have executed a statement in that transaction first
(SQLAlchemy begins the asyncpg transaction lazily). A unique violation the statement does not
absorb raises :class:`DuplicateRow`.
"""

from __future__ import annotations

import operator
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
    conflicts_expected: bool = False,
) -> bool:
    """Insert ``rows`` (dicts with the same keys; ``columns`` picks some) in one statement
    (``on_conflict``: see the module doc). ``conflicts_expected`` (with ``on_conflict``) skips
    the ``COPY`` attempt: for rows known to conflict, such as an upsert of existing keys.
    Return whether every row was written as given (False when ``DO NOTHING`` kept a row that
    was there before)."""
    if not rows:
        return True
    names = list(columns if columns is not None else rows[0])
    driver: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's connection
    pick = operator.itemgetter(*names)  # one C call per row (a tuple, or one value)
    records = list(map(pick, rows)) if len(names) > 1 else [(pick(row),) for row in rows]
    try:
        if not on_conflict:
            await driver.copy_records_to_table(table.name, records=records, columns=names)
            return True
        if not conflicts_expected:
            try:
                async with driver.transaction():  # a savepoint: the caller's transaction is open
                    await driver.copy_records_to_table(table.name, records=records, columns=names)
                return True
            except asyncpg.UniqueViolationError:
                pass  # rolled back to the savepoint: let the conflict clause decide each row
        arrays = [list(column) for column in zip(*records, strict=True)]
        status = await driver.execute(statement(table, names, on_conflict), *arrays)
        return bool(status == f"INSERT 0 {len(records)}")  # rows written, inserted or updated
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateRow(f"{table.name}: {exc.constraint_name}") from exc
