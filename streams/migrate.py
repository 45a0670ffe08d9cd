"""Database migrations (Alembic): every table is created and changed only by a revision.

The revisions live in ``streams/migrations/versions`` (``0001_baseline`` adopts a database made
before migrations existed: it creates what is missing and keeps the data). :func:`upgrade` brings
a database to the newest revision in one transaction; on PostgreSQL it first takes an advisory
lock, so workers starting together upgrade one after the other and the later ones find nothing
to do. ``callstream db upgrade`` runs it; :class:`streams.db.Database` runs it at every start, so
the embedded SQLite database (and a PostgreSQL one whose role may alter tables) is always
current. A database at a revision this build does not know (written by a newer build) is refused.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.errors import CallstreamError

log = logging.getLogger(__name__)

SCRIPTS = Path(__file__).with_name("migrations")
_LOCK_ID = 0x63616C6C  # "call": PostgreSQL advisory lock serialising upgrades


class MigrationError(CallstreamError):
    """The database cannot be brought to this build's schema."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Build Alembic's configuration (no alembic.ini), optionally bound to ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def head() -> str:
    """Return the newest revision this build knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise MigrationError("no migration revisions found in " + str(SCRIPTS))
    return revision


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _upgrade(conn: Connection, revision: str) -> tuple[str | None, str | None]:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    before = _current(conn)
    if before is not None and not _known(before):
        raise MigrationError(
            f"the database is at revision {before!r}, which this build does not know: it was "
            "upgraded by a newer callstream; run that version"
        )
    if before != head() or revision != "head":
        command.upgrade(alembic_config(conn), revision)
    return before, _current(conn)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database to ``revision`` in one transaction; return (before, after)."""
    async with engine.begin() as conn:
        before, after = await conn.run_sync(_upgrade, revision)
    if before != after:
        log.info("database upgraded from %s to %s", before or "(empty)", after)
    return before, after


async def current(engine: AsyncEngine) -> str | None:
    """Return the database's revision (None: never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def history() -> list[dict[str, Any]]:
    """Return every revision, oldest first: id and summary."""
    script = ScriptDirectory.from_config(alembic_config())
    return [
        {"revision": r.revision, "summary": (r.doc or "").splitlines()[0]}
        for r in reversed(list(script.walk_revisions()))
    ]
