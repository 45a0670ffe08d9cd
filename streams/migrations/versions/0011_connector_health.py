"""Connector health reports: each worker writes the status of the connectors it runs, so the
API of any worker shows every connector's health (streams/connector_health.py).

Revision ID: 0011_connector_health
Revises: 0010_outbox_result_key
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_connector_health"
down_revision = "0010_outbox_result_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connector_health",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("connector", sa.String(64), primary_key=True),
        sa.Column("worker", sa.String(80), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_success", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_kind", sa.String(32)),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("announced_total", sa.BigInteger, nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("connector_health")
