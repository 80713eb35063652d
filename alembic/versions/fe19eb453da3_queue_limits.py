"""Add sqla_jobs_queue_limit: a queue's cap on running jobs, across every worker.

Revision ID: fe19eb453da3
Revises: b9c0d1e2f3a4
Create Date: 2026-11-29 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fe19eb453da3"
down_revision: str | Sequence[str] | None = "b9c0d1e2f3a4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create sqla_jobs_queue_limit."""
    op.create_table(
        "sqla_jobs_queue_limit",
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "max_running >= 0",
            name=op.f("ck_sqla_jobs_queue_limit_max_running_not_negative"),
        ),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_sqla_jobs_queue_limit")),
    )


def downgrade() -> None:
    """Drop sqla_jobs_queue_limit."""
    op.drop_table("sqla_jobs_queue_limit")
