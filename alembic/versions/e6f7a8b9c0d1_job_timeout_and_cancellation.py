"""Per-job time limits and cancellation requests.

Revision ID: e6f7a8b9c0d1
Revises: d5e6f7a8b9c0
Create Date: 2026-11-28 09:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e6f7a8b9c0d1"
down_revision: str | Sequence[str] | None = "d5e6f7a8b9c0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A running job's worker hears of its cancellation at once: payload "<job id>:<reason>" (cut to
# fit NOTIFY's 8 000 bytes). Workers also look for requests at every heartbeat, so SQLite, or a
# notification lost to a reconnect, only delays a cancellation.
CREATE_FUNCTION = """
CREATE FUNCTION sqla_jobs_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs_cancel', NEW.id::text || ':' || left(NEW.cancel_reason, 4000));
    RETURN NULL;
END
$$
"""

CREATE_TRIGGER = """
CREATE TRIGGER sqla_jobs_job_notify_cancel
AFTER UPDATE OF cancel_reason ON sqla_jobs_job
FOR EACH ROW
WHEN (NEW.cancel_reason IS NOT NULL AND NEW.locked_by IS NOT NULL)
EXECUTE FUNCTION sqla_jobs_notify_cancel()
"""


def upgrade() -> None:
    """Add sqla_jobs_job.timeout_seconds and .cancel_reason, and the cancel notification."""
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTION)
        op.execute(CREATE_TRIGGER)


def downgrade() -> None:
    """Drop the cancel notification, sqla_jobs_job.timeout_seconds and .cancel_reason."""
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER sqla_jobs_job_notify_cancel ON sqla_jobs_job")
        op.execute("DROP FUNCTION sqla_jobs_notify_cancel()")
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.drop_column("cancel_reason")
        batch.drop_column("timeout_seconds")
