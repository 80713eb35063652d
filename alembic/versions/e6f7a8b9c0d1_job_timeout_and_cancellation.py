"""Per-job time limits and cancellation requests.

Revision ID: e6f7a8b9c0d1
Revises: d5e6f7a8b9c0
Create Date: 2026-11-28 09:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sqla_jobs.ddl import (
    CREATE_NOTIFY_CANCEL_TRIGGER,
    DROP_NOTIFY_CANCEL_FUNCTION,
    DROP_NOTIFY_CANCEL_TRIGGER,
)

revision: str = "e6f7a8b9c0d1"
down_revision: str | Sequence[str] | None = "d5e6f7a8b9c0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Frozen here: revision a8b9c0d1e2f3 replaced it (it cut the reason to 4 000 characters, which
# can exceed NOTIFY's 8 000 bytes). A running job's worker hears of its cancellation at once:
# payload "<job id>:<reason>". Workers also look for requests at every heartbeat, so SQLite, or a
# notification lost to a reconnect, only delays a cancellation.
CREATE_FUNCTION = """
CREATE FUNCTION sqla_jobs_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs_cancel', NEW.id::text || ':' || left(NEW.cancel_reason, 4000));
    RETURN NULL;
END
$$
"""

def upgrade() -> None:
    """Add sqla_jobs_job.timeout_seconds and .cancel_reason, and the cancel notification."""
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
    if op.get_context().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTION)
        op.execute(CREATE_NOTIFY_CANCEL_TRIGGER)


def downgrade() -> None:
    """Drop the cancel notification, sqla_jobs_job.timeout_seconds and .cancel_reason."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(DROP_NOTIFY_CANCEL_TRIGGER)
        op.execute(DROP_NOTIFY_CANCEL_FUNCTION)
    with op.batch_alter_table("sqla_jobs_job") as batch:
        batch.drop_column("cancel_reason")
        batch.drop_column("timeout_seconds")
