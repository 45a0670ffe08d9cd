"""Recordings fetched by reference: the durable queue of fetches, one row per case.

Revision ID: 0005_recording_fetches
Revises: 0004_jobs_exports
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_recording_fetches"
down_revision = "0004_jobs_exports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recording_fetches",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("conversation", sa.LargeBinary(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("media_key", sa.String(length=1024), nullable=True),
        sa.Column("recording_ref", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("media_type", sa.String(length=255), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_index(
        "ix_recording_fetches_due",
        "recording_fetches",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        "ix_recording_fetches_tenant", "recording_fetches", ["tenant", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_recording_fetches_tenant", table_name="recording_fetches")
    op.drop_index("ix_recording_fetches_due", table_name="recording_fetches")
    op.drop_table("recording_fetches")
