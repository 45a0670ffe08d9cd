"""The database engines: errors never carry bound values (phone numbers, transcripts); one
service process per SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from streams.db import claim_sqlite_file, create_engine
from streams.errors import ConfigError

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


def test_a_second_process_on_one_sqlite_file_is_refused_until_the_first_dies(
    tmp_path: Path,
) -> None:
    """Two services on one SQLite file would each relay the same outbox rows: the second one
    is refused with an error naming the field and the holder; a killed holder leaves no claim."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'callstream.db'}"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from streams.db import claim_sqlite_file;"
            " claim_sqlite_file(sys.argv[1]); print('claimed', flush=True); time.sleep(60)",
            url,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"claimed\n"
        with pytest.raises(ConfigError) as info:
            claim_sqlite_file(url)
        assert info.value.problems[0].startswith("database.url: the SQLite file")
        assert f"pid {holder.pid}" in str(info.value) and "PostgreSQL" in str(info.value)
    finally:
        holder.kill()
        holder.communicate()
    release = claim_sqlite_file(url)  # SIGKILL released it
    with pytest.raises(ConfigError):
        claim_sqlite_file(url)  # one claim per file, also within one process
    release()
    claim_sqlite_file(url)()


def test_a_sqlite_file_in_a_folder_that_cannot_be_made_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^invalid configuration:\n  database.url: cannot open"):
        claim_sqlite_file(f"sqlite+aiosqlite:///{tmp_path / 'file' / 'callstream.db'}")


def test_postgresql_and_memory_urls_need_no_claim() -> None:
    for url in ("postgresql+asyncpg://u:p@db/callstream", "sqlite+aiosqlite:///:memory:"):
        claim_sqlite_file(url)()
        claim_sqlite_file(url)()
