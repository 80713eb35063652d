"""Index waiting jobs only, in the claim's new order; cut cancel notifications by bytes.

The claim index becomes partial (unlocked, uncancelled jobs) on (queue, priority DESC, run_at,
id), so a claim stops after LIMIT entries whatever the backlog of future or retrying jobs; the
(queue, run_at) index keeps only waiting jobs that were scheduled or retried, for the next-due
probe; the locked_by index keeps running jobs only. The cancel trigger's reason is cut to 7 900 bytes instead of 4 000
characters, which could exceed NOTIFY's 8 000-byte limit and fail the cancelling UPDATE.

Revision ID: a8b9c0d1e2f3
Revises: f7a8b9c0d1e2
Create Date: 2026-11-29 21:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqla_jobs.ddl import CREATE_NOTIFY_CANCEL_FUNCTION

revision: str = "a8b9c0d1e2f3"
down_revision: str | Sequence[str] | None = "f7a8b9c0d1e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here rather than imported from sqla_jobs.models (see the initial revision).
WAITING = sa.text("locked_by IS NULL AND cancel_reason IS NULL")
DEFERRED = sa.text("locked_by IS NULL AND cancel_reason IS NULL AND run_at > created_at")
LOCKED = sa.text("locked_by IS NOT NULL")

# What revision e6f7a8b9c0d1 created, restored by the downgrade.
CREATE_PREVIOUS_NOTIFY_CANCEL_FUNCTION = """
CREATE OR REPLACE FUNCTION sqla_jobs_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs_cancel', NEW.id::text || ':' || left(NEW.cancel_reason, 4000));
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    """Replace the claim, next-due and locked_by indexes by partial ones; fix the cancel NOTIFY."""
    op.drop_index("ix_sqla_jobs_job_claim", table_name="sqla_jobs_job")
    op.drop_index("ix_sqla_jobs_job_queue_run_at", table_name="sqla_jobs_job")
    op.drop_index("ix_sqla_jobs_job_locked_by", table_name="sqla_jobs_job")
    op.create_index(
        "ix_sqla_jobs_job_waiting_claim",
        "sqla_jobs_job",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_index(
        "ix_sqla_jobs_job_deferred_run_at",
        "sqla_jobs_job",
        ["queue", "run_at"],
        postgresql_where=DEFERRED,
        sqlite_where=DEFERRED,
    )
    op.create_index(
        "ix_sqla_jobs_job_locked_by",
        "sqla_jobs_job",
        ["locked_by"],
        postgresql_where=LOCKED,
        sqlite_where=LOCKED,
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE_NOTIFY_CANCEL_FUNCTION)


def downgrade() -> None:
    """Restore the previous indexes and cancel notification."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE_PREVIOUS_NOTIFY_CANCEL_FUNCTION)
    op.drop_index("ix_sqla_jobs_job_locked_by", table_name="sqla_jobs_job")
    op.drop_index("ix_sqla_jobs_job_deferred_run_at", table_name="sqla_jobs_job")
    op.drop_index("ix_sqla_jobs_job_waiting_claim", table_name="sqla_jobs_job")
    op.create_index("ix_sqla_jobs_job_locked_by", "sqla_jobs_job", ["locked_by"], unique=False)
    op.create_index("ix_sqla_jobs_job_queue_run_at", "sqla_jobs_job", ["queue", "run_at"])
    op.create_index(
        "ix_sqla_jobs_job_claim",
        "sqla_jobs_job",
        ["queue", sa.text("priority DESC"), "created_at"],
        unique=False,
    )
