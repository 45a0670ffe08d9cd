"""Baseline: the tables of callstream before Alembic (connector state, cases, outbox, bundles).

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-23

Databases created before migrations existed hold some or all of these tables and no
``alembic_version``: this revision creates only the tables that are missing and adds the
nullable columns an older build did not have yet, so upgrading such a database keeps its data.
A fresh database gets every table. The definitions are frozen here as they were at this
revision; later changes are later revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    meta = sa.MetaData()
    sa.Table(
        "analysis_results",
        meta,
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("case_version", sa.Integer(), nullable=False),
        sa.Column("result_version", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(length=64), nullable=False),
        sa.Column("profile_version", sa.Integer(), nullable=False),
        sa.Column("overall_score", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=False),
        sa.Column("analysed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    sa.Index(
        "ix_analysis_results_case",
        meta.tables["analysis_results"].c["case_id"],
        meta.tables["analysis_results"].c["result_version"],
        unique=False,
    )
    sa.Table(
        "applied_deliveries",
        meta,
        sa.Column("delivery_key", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery_key"),
    )
    sa.Table(
        "bundle_locks",
        meta,
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("source_system", sa.String(length=128), nullable=False),
        sa.Column("touched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "source_system"),
    )
    sa.Table(
        "cases",
        meta,
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("source_system", sa.String(length=128), nullable=False),
        sa.Column("external_interaction_id", sa.String(length=512), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("conversation", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )
    sa.Index("ix_cases_tenant", meta.tables["cases"].c["tenant"], unique=False)
    sa.Table(
        "connector_files",
        meta,
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("checksum", sa.String(length=128), nullable=True),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleanup_stage", sa.String(length=16), nullable=True),
        sa.Column("cleanup_action", sa.String(length=32), nullable=True),
        sa.Column("cleaned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("moved_to", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "connector", "path"),
    )
    sa.Table(
        "file_outcomes",
        meta,
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("rows_accepted", sa.BigInteger(), nullable=False),
        sa.Column("rows_rejected", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rejected_by_reason", sa.Text(), nullable=True),
        sa.Column("rows_done", sa.BigInteger(), nullable=True),
        sa.Column("lines_read", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("file_id"),
    )
    sa.Index("ix_file_outcomes_tenant", meta.tables["file_outcomes"].c["tenant"], unique=False)
    sa.Table(
        "outbox",
        meta,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    sa.Index("ix_outbox_published_at", meta.tables["outbox"].c["published_at"], unique=False)
    sa.Table(
        "pending_metadata",
        meta,
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("source_system", sa.String(length=128), nullable=False),
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("call_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "connector", "path"),
    )
    sa.Index(
        "ix_pending_metadata_source",
        meta.tables["pending_metadata"].c["tenant"],
        meta.tables["pending_metadata"].c["source_system"],
        unique=False,
    )
    sa.Table(
        "recording_bundles",
        meta,
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("source_system", sa.String(length=128), nullable=False),
        sa.Column("call_key", sa.String(length=512), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("rec_file_id", sa.String(length=32), nullable=True),
        sa.Column("rec_connector", sa.String(length=64), nullable=True),
        sa.Column("rec_path", sa.String(length=1024), nullable=True),
        sa.Column("rec_ref", sa.Text(), nullable=True),
        sa.Column("rec_sha256", sa.String(length=64), nullable=True),
        sa.Column("rec_size", sa.BigInteger(), nullable=True),
        sa.Column("rec_duration", sa.Float(), nullable=True),
        sa.Column("rec_fields", sa.Text(), nullable=True),
        sa.Column("rec_call_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rec_announced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rec_arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meta_file_id", sa.String(length=32), nullable=True),
        sa.Column("meta_connector", sa.String(length=64), nullable=True),
        sa.Column("meta_path", sa.String(length=1024), nullable=True),
        sa.Column("meta_fields", sa.Text(), nullable=True),
        sa.Column("meta_call_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meta_versions", sa.Integer(), nullable=True),
        sa.Column("meta_announced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meta_first_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meta_arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("match_fields", sa.String(length=64), nullable=True),
        sa.Column("missing_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "source_system", "call_key"),
    )
    sa.Index(
        "ix_recording_bundles_meta_path",
        meta.tables["recording_bundles"].c["tenant"],
        meta.tables["recording_bundles"].c["meta_connector"],
        meta.tables["recording_bundles"].c["meta_path"],
        unique=False,
    )
    sa.Index(
        "ix_recording_bundles_waiting",
        meta.tables["recording_bundles"].c["tenant"],
        meta.tables["recording_bundles"].c["rec_connector"],
        meta.tables["recording_bundles"].c["missing_reported_at"],
        unique=False,
    )
    return meta


def upgrade() -> None:
    bind = op.get_bind()
    meta = _tables()
    meta.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table in meta.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(f"table {table.name} lacks the required column {column.name}")
            with op.batch_alter_table(table.name) as batch:
                batch.add_column(sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    _tables().drop_all(bind, checkfirst=True)
