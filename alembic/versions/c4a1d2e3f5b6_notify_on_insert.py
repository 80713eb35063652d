"""Wake idle workers at commit: NOTIFY on insert, and an index for the next due job.

Revision ID: c4a1d2e3f5b6
Revises: bb9573e5bdaf
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c4a1d2e3f5b6"
down_revision: str | Sequence[str] | None = "bb9573e5bdaf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A statement-level trigger sends one notification per queue per INSERT statement, however many
# rows it inserts, and PostgreSQL folds identical notifications of one transaction into one.
# NOTIFY is delivered at commit only, so a rolled-back job wakes nobody. The payload is the
# queue name, never the job's payload. (Alembic has no construct for functions and triggers.)
CREATE_FUNCTION = """
CREATE FUNCTION sqla_jobs_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs', queues.queue)
    FROM (SELECT DISTINCT queue FROM sqla_jobs_inserted) AS queues;
    RETURN NULL;
END
$$
"""

CREATE_TRIGGER = """
CREATE TRIGGER sqla_jobs_job_notify_insert
AFTER INSERT ON sqla_jobs_job
REFERENCING NEW TABLE AS sqla_jobs_inserted
FOR EACH STATEMENT EXECUTE FUNCTION sqla_jobs_notify_insert()
"""


def upgrade() -> None:
    """Add the insert trigger (PostgreSQL only) and the (queue, run_at) index."""
    op.create_index("ix_sqla_jobs_job_queue_run_at", "sqla_jobs_job", ["queue", "run_at"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTION)
        op.execute(CREATE_TRIGGER)


def downgrade() -> None:
    """Drop the insert trigger and the (queue, run_at) index."""
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER sqla_jobs_job_notify_insert ON sqla_jobs_job")
        op.execute("DROP FUNCTION sqla_jobs_notify_insert()")
    op.drop_index("ix_sqla_jobs_job_queue_run_at", table_name="sqla_jobs_job")
