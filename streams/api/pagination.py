"""Cursor pagination shared by every list: ``?limit=&cursor=``, answered with a :class:`Page`.

The cursor is opaque to callers: the sort key of the last item returned, JSON in URL-safe
base64. A list sorts by a unique key (usually ``(created_at, id)`` or an autoincrement id) and
returns the items after the cursor, so pages never skip nor repeat an item while rows are added.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from streams.api.problems import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 100


class PageQuery(BaseModel):
    """The paging parameters of a list (extend it with the list's filters)."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=500, description="Most items to return (1-500).")
    cursor: str | None = Field(
        None,
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="next_cursor of the previous page.",
    )


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T] = Field(description="The items of this page, in the list's order.")
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null on the last page."
    )


def encode_cursor(key: list[Any]) -> str:
    """Encode the sort key of the last item returned."""
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    """Decode a cursor into a sort key of ``size`` values; 400 when it is not one of ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("invalid cursor: pass next_cursor of the previous page") from exc
    if not isinstance(key, list) or len(key) != size:
        raise BadRequest("invalid cursor: pass next_cursor of the previous page")
    return key
