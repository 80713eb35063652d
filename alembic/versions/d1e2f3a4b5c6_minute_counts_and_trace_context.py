"""Per-minute job counts (sqla_jobs_minute_count) and sqla_jobs_job.trace_context.

Workers add what they finished each minute to sqla_jobs_minute_count, which the dashboard's
throughput chart reads (no scan of the jobs). trace_context holds the W3C traceparent of the
span that enqueued a job, when the application traces; existing rows have none.

Revision ID: d1e2f3a4b5c6
Revises: c0d1e2f3a4b5
Create Date: 2026-11-30 00:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d1e2f3a4b5c6"
down_revision: str | Sequence[str] | None = "c0d1e2f3a4b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the per-minute counts table and add the trace context column."""
    op.create_table(
        "sqla_jobs_minute_count",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "minute", "queue", "name", "outcome", name="pk_sqla_jobs_minute_count"
        ),
    )
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.add_column(sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the trace context column and the per-minute counts table."""
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.drop_column("trace_context")
    op.drop_table("sqla_jobs_minute_count")
