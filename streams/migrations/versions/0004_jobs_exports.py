"""Jobs and exports: jobs, the execution history and the files its import runs processed,
export connectors, stored report files, users (verified e-mail), failure notices, and the
tenant's time zone and notification addresses; API keys may act for a user.

Revision ID: 0004_jobs_exports
Revises: 0003_connectors_sources_ingest
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_jobs_exports"
down_revision = "0003_connectors_sources_ingest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_files",
        sa.Column("execution_id", sa.String(length=32), nullable=False),
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "file_id"),
    )
    op.create_index(
        "ix_execution_files_tenant_file", "execution_files", ["tenant", "file_id"], unique=False
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("connectors", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("deliveries", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "job_id", "scheduled_for", name="uq_executions_run"),
    )
    op.create_index("ix_executions_status", "executions", ["status"], unique=False)
    op.create_index(
        "ix_executions_tenant_created", "executions", ["tenant", "created_at", "id"], unique=False
    )
    op.create_table(
        "export_connectors",
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
        sa.UniqueConstraint("tenant", "name", name="uq_export_connectors_tenant_name"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("connectors", sa.Text(), nullable=False),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("time_of_day", sa.Time(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("weekday", sa.String(length=9), nullable=True),
        sa.Column("day_of_month", sa.Integer(), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("armed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "name", name="uq_jobs_tenant_name"),
    )
    op.create_index("ix_jobs_enabled", "jobs", ["enabled"], unique=False)
    op.create_table(
        "notifications",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("subject_key", sa.Text(), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "subject_hash"),
    )
    op.create_table(
        "notified_files",
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mailed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("file_id"),
    )
    op.create_table(
        "report_files",
        sa.Column("id", sa.String(length=28), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_report_files_execution_id"), "report_files", ["execution_id"], unique=False
    )
    op.create_index(
        op.f("ix_report_files_expires_at"), "report_files", ["expires_at"], unique=False
    )
    op.create_index(
        "ix_report_files_tenant_created",
        "report_files",
        ["tenant", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "email", name="uq_users_tenant_email"),
    )
    op.create_index(
        "ix_users_tenant_created", "users", ["tenant", "created_at", "id"], unique=False
    )
    op.add_column("api_keys", sa.Column("user_id", sa.String(length=20), nullable=True))
    op.add_column("tenants", sa.Column("timezone", sa.String(length=64), nullable=True))
    op.add_column("tenants", sa.Column("notification_emails", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "notification_emails")
    op.drop_column("tenants", "timezone")
    op.drop_column("api_keys", "user_id")
    op.drop_index("ix_users_tenant_created", table_name="users")
    op.drop_table("users")
    op.drop_index("ix_report_files_tenant_created", table_name="report_files")
    op.drop_index(op.f("ix_report_files_expires_at"), table_name="report_files")
    op.drop_index(op.f("ix_report_files_execution_id"), table_name="report_files")
    op.drop_table("report_files")
    op.drop_table("notified_files")
    op.drop_table("notifications")
    op.drop_index("ix_jobs_enabled", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("export_connectors")
    op.drop_index("ix_executions_tenant_created", table_name="executions")
    op.drop_index("ix_executions_status", table_name="executions")
    op.drop_table("executions")
    op.drop_index("ix_execution_files_tenant_file", table_name="execution_files")
    op.drop_table("execution_files")
