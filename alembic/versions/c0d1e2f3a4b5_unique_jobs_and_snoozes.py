"""Unique jobs and snoozes: sqla_jobs_job.unique_key and .snooze_count, dead letters' unique_key.

A partial unique index on (name, unique_key), over the rows that have a key, lets
`enqueue_unique()` insert with ON CONFLICT DO NOTHING. Every existing row has no key, so the
index starts empty.

Revision ID: c0d1e2f3a4b5
Revises: fe19eb453da3
Create Date: 2026-11-29 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0d1e2f3a4b5"
down_revision: str | Sequence[str] | None = "fe19eb453da3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from sqla_jobs.models (see the initial revision).
HAS_UNIQUE_KEY = sa.text("unique_key IS NOT NULL")


def upgrade() -> None:
    """Add the unique key and snooze count columns and the unique-key index."""
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.add_column(sa.Column("unique_key", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("snooze_count", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("sqla_jobs_dead_letter_job") as batch:
        batch.add_column(sa.Column("unique_key", sa.Text(), nullable=True))
    op.create_index(
        "ix_sqla_jobs_job_unique_key",
        "sqla_jobs_job",
        ["name", "unique_key"],
        unique=True,
        postgresql_where=HAS_UNIQUE_KEY,
        sqlite_where=HAS_UNIQUE_KEY,
    )


def downgrade() -> None:
    """Drop the unique-key index and the columns."""
    op.drop_index("ix_sqla_jobs_job_unique_key", table_name="sqla_jobs_job")
    with op.batch_alter_table("sqla_jobs_dead_letter_job") as batch:
        batch.drop_column("unique_key")
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.drop_column("snooze_count")
        batch.drop_column("unique_key")
