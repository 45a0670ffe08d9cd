"""The durable queue of transcriptions (streams/voice/queue.py).

Revision ID: 0007_transcriptions
Revises: 0006_dropbox
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_transcriptions"
down_revision = "0006_dropbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcriptions",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("conversation", sa.LargeBinary(), nullable=False),
        sa.Column("recording_key", sa.Text(), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("turns", sa.Text(), nullable=True),
        sa.Column("redactions", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_index(
        "ix_transcriptions_due", "transcriptions", ["status", "next_attempt_at"], unique=False
    )
    op.create_index(
        "ix_transcriptions_tenant", "transcriptions", ["tenant", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_transcriptions_tenant", table_name="transcriptions")
    op.drop_index("ix_transcriptions_due", table_name="transcriptions")
    op.drop_table("transcriptions")
