"""Register running workers and their heartbeats, so the jobs of a dead one are rescued fast.

Revision ID: d5e6f7a8b9c0
Revises: c4a1d2e3f5b6
Create Date: 2026-11-28 09:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from sqla_jobs.clock import db_now

revision: str = "d5e6f7a8b9c0"
down_revision: str | Sequence[str] | None = "c4a1d2e3f5b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create sqla_jobs_worker."""
    op.create_table(
        "sqla_jobs_worker",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "queues", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False
        ),
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sqla_jobs_worker")),
    )
    op.create_index(
        op.f("ix_sqla_jobs_worker_heartbeat_at"), "sqla_jobs_worker", ["heartbeat_at"]
    )


def downgrade() -> None:
    """Drop sqla_jobs_worker."""
    op.drop_index(op.f("ix_sqla_jobs_worker_heartbeat_at"), table_name="sqla_jobs_worker")
    op.drop_table("sqla_jobs_worker")
