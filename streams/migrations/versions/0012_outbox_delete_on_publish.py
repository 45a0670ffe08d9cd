"""The outbox relay deletes a row once Kafka has it, instead of marking it published.

Marking wrote a new row version and two index entries per published row, and a purge deleted
the row an hour later; the table held an hour of published rows next to the few still to
publish. Now it holds only what is still to publish. The rows already published go, and so
does the index on ``published_at`` (only the claim and the purge read it). The column stays
for one release: during a rolling upgrade workers of the previous release still mark rows
published, which this release's relay skips and purges; a later revision drops it.

The delete runs once, in the upgrade's transaction: its time grows with what the previous
release kept (up to an hour of published rows, two per conversation at full rate). It blocks no
writer; the index drop after it waits for the relay transactions open at that moment (one Kafka
send each) and holds the table only until the upgrade commits. A worker of the previous release
that is still running keeps working; one that restarts refuses the newer database, as with
every revision.

Revision ID: 0012_outbox_delete_on_publish
Revises: 0011_connector_health
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0012_outbox_delete_on_publish"
down_revision = "0011_connector_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM outbox WHERE published_at IS NOT NULL")
    op.drop_index("ix_outbox_published_at", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])
