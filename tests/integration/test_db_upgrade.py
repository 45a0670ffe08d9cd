"""``callstream db upgrade`` on a database created by the release before migrations existed.

``tests/data/db/main-f4874a0-<dialect>.sql`` is the schema main (f4874a0) created with
``create_all``, generated from that commit's code. The test builds such a database with data in
it, upgrades it with the CLI, and checks the data is still there and readable by today's code.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

from sqlalchemy import select, text
from support import CALLSTREAM

from streams import migrate
from streams.cases.store import PUBLISHED_VALUE, CaseStore, outbox
from streams.codec import AvroCodec
from streams.db import create_engine
from streams.state import ConnectorState
from streams.topics import Topics

DATA = Path(__file__).parents[1] / "data" / "db"
NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


async def _old_database(url: str) -> None:
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    script = (DATA / f"main-f4874a0-{dialect}.sql").read_text()
    statements = [s.strip() for s in script.split(";\n") if s.strip() and "CREATE" in s]
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
            await conn.execute(
                text(
                    "INSERT INTO connector_files (tenant, connector, path, version_id, version, "
                    "size, mtime, file_id, announced_at) VALUES ('acme', 'local', 'a.csv', 'v1', "
                    "1, 3, 1.0, 'f1', :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO cases (case_id, tenant, source_system, external_interaction_id, "
                    "version, content_hash, channel, conversation, opened_at, updated_at) VALUES "
                    "('c1', 'acme', 'crm', 'ext-1', 1, 'h', 'voice', '{}', :now, :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                outbox.insert(),
                [{"topic": "t.cases.v1", "key": b"c1", "value": b"event", "created_at": NOW}],
            )
    finally:
        await engine.dispose()


def _upgrade(url: str) -> str:
    proc = subprocess.run(
        [*CALLSTREAM, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CALLSTREAM_DATABASE__URL": url},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


async def test_a_database_made_before_migrations_is_upgraded_keeping_its_data(
    database_url: str,
) -> None:
    await _old_database(database_url)

    assert f"database upgraded from (empty) to {migrate.head()}" in _upgrade(database_url)
    assert f"up to date at revision {migrate.head()}" in _upgrade(database_url)

    async with ConnectorState(database_url) as state:
        known = await state.load_known("acme", "local")
        assert known["a.csv"].version_id == "v1"
        assert await migrate.current(state.engine) == migrate.head()
        async with state.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM tenants"))).scalar_one() == 0
    async with CaseStore(database_url, AvroCodec(), Topics("t"), lambda _t: ()) as cases:
        assert await cases.count_cases("acme") == 1
        async with cases.engine.connect() as conn:  # an outbox row queued before 0010
            queued = (await conn.execute(select(outbox.c.key, PUBLISHED_VALUE))).one()
        assert (bytes(queued.key), bytes(queued.value)) == (b"c1", b"event")


async def test_a_database_of_a_newer_build_is_refused(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        await engine.dispose()
    proc = subprocess.run(
        [*CALLSTREAM, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CALLSTREAM_DATABASE__URL": database_url},
        check=False,
    )
    assert proc.returncode == 1
    assert "upgraded by a newer callstream" in proc.stderr
