"""The Alembic revisions create exactly the tables the code defines."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import streams.service  # noqa: F401 - imports every module that defines a table
from streams import migrate
from streams.db import metadata


def _migrated(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "head")
    return engine


def test_the_migrations_create_every_table_and_column_the_code_defines(tmp_path: Path) -> None:
    engine = _migrated(tmp_path)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], "models and migrations differ: add a revision in streams/migrations"


def test_every_revision_downgrades_to_an_empty_database(tmp_path: Path) -> None:
    engine = _migrated(tmp_path)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]


def test_revisions_form_one_line_ending_at_head() -> None:
    revisions = [r["revision"] for r in migrate.history()]
    assert revisions[0] == "0001_baseline"
    assert revisions[-1] == migrate.head()
    assert len(revisions) == len(set(revisions))
