"""Create the job and dead-letter tables.

Revision ID: bb9573e5bdaf
Revises:
Create Date: 2026-11-28 08:48:03.700198
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from sqla_jobs.clock import db_now
from sqla_jobs.migrate import refuse_existing_schema

revision: str = "bb9573e5bdaf"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sqla_jobs",)
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from sqla_jobs.models: a revision must keep creating what it
# created on the day it was written, whatever the models become.
Payload = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create sqla_jobs_job and sqla_jobs_dead_letter_job with their indexes."""
    # Tables made by another way of migrating (the application's own history, or ours beside
    # it) get one sentence instead of a duplicate table error half-way.
    refuse_existing_schema(op.get_context())
    op.create_table(
        "sqla_jobs_job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("payload", Payload, nullable=False),
        sa.Column("queue", sa.String(length=255), server_default="default", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False
        ),
        sa.Column("context", sa.Text(), server_default="", nullable=False),
        sa.Column("error_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=255), nullable=True),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sqla_jobs_job")),
    )
    op.create_index(
        "ix_sqla_jobs_job_claim",
        "sqla_jobs_job",
        ["queue", sa.text("priority DESC"), "created_at"],
        unique=False,
    )
    op.create_index("ix_sqla_jobs_job_locked_by", "sqla_jobs_job", ["locked_by"], unique=False)

    op.create_table(
        "sqla_jobs_dead_letter_job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("original_job_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("payload", Payload, nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sqla_jobs_dead_letter_job")),
    )
    op.create_index(
        op.f("ix_sqla_jobs_dead_letter_job_original_job_id"),
        "sqla_jobs_dead_letter_job",
        ["original_job_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_sqla_jobs_dead_letter_job_failed_at"),
        "sqla_jobs_dead_letter_job",
        ["failed_at"],
        unique=False,
    )


def downgrade() -> None:
    """Drop both tables and their indexes."""
    op.drop_index(
        op.f("ix_sqla_jobs_dead_letter_job_failed_at"), table_name="sqla_jobs_dead_letter_job"
    )
    op.drop_index(
        op.f("ix_sqla_jobs_dead_letter_job_original_job_id"),
        table_name="sqla_jobs_dead_letter_job",
    )
    op.drop_table("sqla_jobs_dead_letter_job")
    op.drop_index("ix_sqla_jobs_job_locked_by", table_name="sqla_jobs_job")
    op.drop_index("ix_sqla_jobs_job_claim", table_name="sqla_jobs_job")
    op.drop_table("sqla_jobs_job")
