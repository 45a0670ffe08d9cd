"""Control plane, part 2: connectors, source schemas and records, ingest requests, case
versions (lineage), dead letters (replay), and result filters (agent, team, campaign).

Revision ID: 0003_connectors_sources_ingest
Revises: 0002_control_plane
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_connectors_sources_ingest"
down_revision = "0002_control_plane"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_versions",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=True),
        sa.Column("row", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "version"),
    )
    op.create_index(
        "ix_case_versions_tenant_file", "case_versions", ["tenant", "file_id"], unique=False
    )
    op.create_table(
        "connectors",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=True),
        sa.Column("public_key", sa.String(length=200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "name", name="uq_connectors_tenant_name"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=True),
        sa.Column("line", sa.BigInteger(), nullable=True),
        sa.Column("column", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("raw_ref", sa.String(length=1024), nullable=True),
        sa.Column("raw_size", sa.BigInteger(), nullable=True),
        sa.Column("header", sa.Text(), nullable=True),
        sa.Column("header_ref", sa.String(length=1024), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("replay_attempts", sa.Integer(), nullable=False),
        sa.Column("last_replay_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replayed_by", sa.String(length=100), nullable=True),
        sa.Column("replay_delivery", sa.String(length=200), nullable=True),
        sa.Column("replay_case_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_dead_letters_tenant_file", "dead_letters", ["tenant", "file_id"], unique=False
    )
    op.create_index(
        "ix_dead_letters_tenant_reason", "dead_letters", ["tenant", "reason"], unique=False
    )
    op.create_index(
        "ix_dead_letters_tenant_time", "dead_letters", ["tenant", "occurred_at", "id"], unique=False
    )
    op.create_table(
        "ingest_requests",
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted", sa.Integer(), nullable=True),
        sa.Column("rejected", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_ingest_requests_key"),
    )
    op.create_table(
        "source_files",
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("source_type", sa.String(length=64), nullable=False),
        sa.Column("file_date", sa.Date(), nullable=False),
        sa.Column("file_name", sa.String(length=100), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_error", sa.String(length=2000), nullable=True),
        sa.Column("records_created", sa.BigInteger(), nullable=False),
        sa.Column("records_updated", sa.BigInteger(), nullable=False),
        sa.Column("records_unchanged", sa.BigInteger(), nullable=False),
        sa.Column("records_deleted", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("file_id"),
    )
    op.create_index(
        "ix_source_files_job",
        "source_files",
        ["tenant", "source_type", "file_date", "started_at"],
        unique=False,
    )
    op.create_table(
        "source_records",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("source_type", sa.String(length=64), nullable=False),
        sa.Column("primary_key", sa.String(length=512), nullable=False),
        sa.Column("file_date", sa.Date(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("row", sa.BigInteger(), nullable=True),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "source_type", "primary_key"),
    )
    op.create_index(
        "ix_source_records_date",
        "source_records",
        ["tenant", "source_type", "file_date"],
        unique=False,
    )
    op.create_index("ix_source_records_file", "source_records", ["file_id"], unique=False)
    op.create_table(
        "source_schemas",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("source_type", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source_name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "source_type", "version"),
    )
    with op.batch_alter_table("analysis_results") as batch:
        batch.add_column(sa.Column("agent_id", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("team", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("campaign", sa.String(length=512), nullable=True))
    op.create_index(
        "ix_analysis_results_tenant_agent", "analysis_results", ["tenant", "agent_id"], unique=False
    )
    op.create_index(
        "ix_analysis_results_tenant_campaign",
        "analysis_results",
        ["tenant", "campaign"],
        unique=False,
    )
    op.create_index(
        "ix_analysis_results_tenant_team", "analysis_results", ["tenant", "team"], unique=False
    )
    op.create_index(
        "ix_analysis_results_tenant_time",
        "analysis_results",
        ["tenant", "analysed_at", "idempotency_key"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_analysis_results_tenant_time", table_name="analysis_results")
    op.drop_index("ix_analysis_results_tenant_team", table_name="analysis_results")
    op.drop_index("ix_analysis_results_tenant_campaign", table_name="analysis_results")
    op.drop_index("ix_analysis_results_tenant_agent", table_name="analysis_results")
    with op.batch_alter_table("analysis_results") as batch:
        batch.drop_column("campaign")
        batch.drop_column("team")
        batch.drop_column("agent_id")
    op.drop_table("source_schemas")
    op.drop_index("ix_source_records_file", table_name="source_records")
    op.drop_index("ix_source_records_date", table_name="source_records")
    op.drop_table("source_records")
    op.drop_index("ix_source_files_job", table_name="source_files")
    op.drop_table("source_files")
    op.drop_table("ingest_requests")
    op.drop_index("ix_dead_letters_tenant_time", table_name="dead_letters")
    op.drop_index("ix_dead_letters_tenant_reason", table_name="dead_letters")
    op.drop_index("ix_dead_letters_tenant_file", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("connectors")
    op.drop_index("ix_case_versions_tenant_file", table_name="case_versions")
    op.drop_table("case_versions")
