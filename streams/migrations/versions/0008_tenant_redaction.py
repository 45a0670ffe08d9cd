"""A tenant's redaction settings set through the API (JSON; NULL: the default, redact).

Revision ID: 0008_tenant_redaction
Revises: 0007_transcriptions
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_tenant_redaction"
down_revision = "0007_transcriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("redaction", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "redaction")
