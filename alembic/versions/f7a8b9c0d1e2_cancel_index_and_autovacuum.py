"""Index cancelled jobs; vacuum and analyze the job table eagerly (PostgreSQL).

Revision ID: f7a8b9c0d1e2
Revises: e6f7a8b9c0d1
Create Date: 2026-11-28 09:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f7a8b9c0d1e2"
down_revision: str | Sequence[str] | None = "e6f7a8b9c0d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CANCELLED = sa.text("cancel_reason IS NOT NULL")

# Every job row is inserted, updated and deleted within minutes: with the default 20 % scale
# factors, dead rows pile up and the planner keeps statistics of a table long gone (after a bulk
# load it would sort the whole backlog at each claim until the next ANALYZE).
QUEUE_TABLE_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.02",
    "autovacuum_analyze_scale_factor = 0.02",
)


def upgrade() -> None:
    """Add the partial index of cancelled jobs and the job table's autovacuum settings."""
    op.create_index(
        "ix_sqla_jobs_job_cancel_requested",
        "sqla_jobs_job",
        ["id"],
        postgresql_where=CANCELLED,
        sqlite_where=CANCELLED,
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE sqla_jobs_job SET ({', '.join(QUEUE_TABLE_AUTOVACUUM)})")


def downgrade() -> None:
    """Drop them again."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE sqla_jobs_job RESET "
            "(autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)"
        )
    op.drop_index("ix_sqla_jobs_job_cancel_requested", table_name="sqla_jobs_job")
