"""Wake idle workers at commit: NOTIFY on insert, and an index for the next due job.

Revision ID: c4a1d2e3f5b6
Revises: bb9573e5bdaf
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from sqla_jobs.ddl import (
    CREATE_NOTIFY_INSERT_FUNCTION,
    CREATE_NOTIFY_INSERT_TRIGGER,
    DROP_NOTIFY_INSERT_FUNCTION,
    DROP_NOTIFY_INSERT_TRIGGER,
)

revision: str = "c4a1d2e3f5b6"
down_revision: str | Sequence[str] | None = "bb9573e5bdaf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def upgrade() -> None:
    """Add the insert trigger (PostgreSQL only) and the (queue, run_at) index."""
    op.create_index("ix_sqla_jobs_job_queue_run_at", "sqla_jobs_job", ["queue", "run_at"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE_NOTIFY_INSERT_FUNCTION)
        op.execute(CREATE_NOTIFY_INSERT_TRIGGER)


def downgrade() -> None:
    """Drop the insert trigger and the (queue, run_at) index."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(DROP_NOTIFY_INSERT_TRIGGER)
        op.execute(DROP_NOTIFY_INSERT_FUNCTION)
    op.drop_index("ix_sqla_jobs_job_queue_run_at", table_name="sqla_jobs_job")
