"""Keyset pages for the data lists (results, dead letters, files): newest first.

Every such list sorts by ``(time, id)`` descending, both unique together, and a page's cursor is
the last item's ``[time ISO 8601, id]``: rows added while a caller pages never make it skip or
repeat an item (new rows are newer than the cursor, so they appear on a fresh first page).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator
from sqlalchemy import ColumnElement, and_, or_

from streams.db import utc as utc  # re-exported: the listings and their callers use it

T = TypeVar("T")
Key = tuple[dt.datetime, str]


def _in_utc(value: dt.datetime) -> dt.datetime:
    try:
        return utc(value)
    except OverflowError as exc:
        raise ValueError("out of range once converted to UTC") from exc


def _numeric(text: str) -> bool:
    """Tell whether ``text`` reads as a number (``12``, ``-1.5``, ``3.8e-135``, ``inf``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _iso_only(value: Any) -> Any:
    """Refuse numbers (pydantic would read them as epoch seconds): the filter is ISO 8601."""
    if isinstance(value, int | float) or (isinstance(value, str) and _numeric(value)):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-11-20T09:00:00Z")
    return value


UtcDateTime = Annotated[dt.datetime, BeforeValidator(_iso_only), AfterValidator(_in_utc)]
IsoDate = Annotated[dt.date, BeforeValidator(_iso_only)]
"""A day filter: YYYY-MM-DD (never a number)."""
"""A time filter: ISO 8601, converted to UTC (no offset: UTC)."""


def cursor_key(raw: list[Any] | None) -> Key | None:
    """Turn a decoded cursor ``[time, id]`` into a sort key; ValueError when it is not one."""
    if raw is None:
        return None
    at, key = raw
    if not isinstance(at, str) or not isinstance(key, str):
        raise ValueError("not a [time, id] cursor")
    return _in_utc(dt.datetime.fromisoformat(at)), key


def before(at: Any, ident: Any, key: Key | None) -> ColumnElement[bool] | None:
    """The condition "sorts after ``key``" in newest-first order (None: first page)."""
    if key is None:
        return None
    return or_(at < key[0], and_(at == key[0], ident < key[1]))


def page(
    rows: Sequence[T], limit: int, key_of: Callable[[T], Key]
) -> tuple[list[T], list[Any] | None]:
    """Split ``limit + 1`` fetched rows into a page and the next cursor key (None: last page)."""
    items = list(rows[:limit])
    if len(rows) <= limit or not items:
        return items, None
    at, ident = key_of(items[-1])
    return items, [utc(at).isoformat(), ident]
