"""Record the slots of periodic schedules, so each slot's job is enqueued exactly once.

Revision ID: b9c0d1e2f3a4
Revises: a8b9c0d1e2f3
Create Date: 2026-11-29 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqla_jobs.clock import db_now

revision: str = "b9c0d1e2f3a4"
down_revision: str | Sequence[str] | None = "a8b9c0d1e2f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create sqla_jobs_periodic_slot."""
    op.create_table(
        "sqla_jobs_periodic_slot",
        sa.Column("schedule", sa.String(length=255), nullable=False),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column(
            "enqueued_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("schedule", "slot_at", name=op.f("pk_sqla_jobs_periodic_slot")),
    )


def downgrade() -> None:
    """Drop sqla_jobs_periodic_slot."""
    op.drop_table("sqla_jobs_periodic_slot")
