"""Hosted SFTP drop box: accounts and their daily upload totals.

Revision ID: 0006_dropbox
Revises: 0005_recording_fetches
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_dropbox"
down_revision = "0005_recording_fetches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dropbox_accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("connector_id", sa.String(length=70), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("public_keys", sa.Text(), nullable=False),
        sa.Column("allow_from", sa.Text(), nullable=False),
        sa.Column("layout", sa.String(length=16), nullable=False),
        sa.Column("workspace_quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("daily_quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_index(
        op.f("ix_dropbox_accounts_tenant"), "dropbox_accounts", ["tenant"], unique=False
    )
    op.create_table(
        "dropbox_usage",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("dropbox_usage")
    op.drop_index(op.f("ix_dropbox_accounts_tenant"), table_name="dropbox_accounts")
    op.drop_table("dropbox_accounts")
