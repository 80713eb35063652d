"""Index cancelled jobs; vacuum and analyze the job table eagerly (PostgreSQL).

Revision ID: f7a8b9c0d1e2
Revises: e6f7a8b9c0d1
Create Date: 2026-11-28 09:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqla_jobs.ddl import RESET_JOB_TABLE_AUTOVACUUM, SET_JOB_TABLE_AUTOVACUUM

revision: str = "f7a8b9c0d1e2"
down_revision: str | Sequence[str] | None = "e6f7a8b9c0d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CANCELLED = sa.text("cancel_reason IS NOT NULL")

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
        op.execute(SET_JOB_TABLE_AUTOVACUUM)


def downgrade() -> None:
    """Drop them again."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(RESET_JOB_TABLE_AUTOVACUUM)
    op.drop_index("ix_sqla_jobs_job_cancel_requested", table_name="sqla_jobs_job")
