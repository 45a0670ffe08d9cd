"""Outbox rows of analysis results point at the stored result instead of copying it.

An AnalysisResult is stored once, in ``analysis_results``; its outbox row carries the result's
idempotency key in ``result_key`` (and an empty ``value``), and the relay reads the record from
``analysis_results`` when it publishes. Rows written before this revision (``result_key`` null)
are published from their ``value`` as before.

Revision ID: 0010_outbox_result_key
Revises: 0009_console_sessions
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_outbox_result_key"
down_revision = "0009_console_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("result_key", sa.String(200), nullable=True))


def downgrade() -> None:
    # Unpublished result rows get their record back before the pointer goes.
    op.execute(
        "UPDATE outbox SET value = (SELECT result FROM analysis_results"
        " WHERE analysis_results.idempotency_key = outbox.result_key)"
        " WHERE result_key IS NOT NULL"
    )
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("result_key")
