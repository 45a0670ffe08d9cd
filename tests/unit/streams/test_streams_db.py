"""The database engines: errors never carry bound values (phone numbers, transcripts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from streams.db import create_engine

PHONE = "+14155550123"


async def test_a_failing_statement_does_not_show_its_bound_values(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    insert = text("INSERT INTO calls (id, ani) VALUES (1, :ani)")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE TABLE calls (id INTEGER PRIMARY KEY, ani TEXT)"))
            await conn.execute(insert, {"ani": PHONE})
            with pytest.raises(IntegrityError) as info:
                await conn.execute(insert, {"ani": PHONE})
    finally:
        await engine.dispose()
    message = str(info.value)
    assert "UNIQUE constraint failed" in message  # the error still says what went wrong
    assert "INSERT INTO calls" in message
    assert PHONE not in message
    assert "hidden" in message
