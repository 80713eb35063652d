"""PostgreSQL DDL with no SQLAlchemy construct: notification triggers, the job table's settings.

One definition serves both ways of building the schema: `sqla_jobs.models` runs these at
``Base.metadata.create_all()`` (DDL events), and the Alembic revisions run them at upgrade. A
shipped revision may use a constant only while its text stays what that revision first ran:
to change one, add a revision that applies the new text, and freeze the old text into the
revisions that used it.
"""

from __future__ import annotations

JOB_TABLE = "sqla_jobs_job"

# A statement-level trigger sends one notification per queue per INSERT statement, however many
# rows it inserts, and PostgreSQL folds identical notifications of one transaction into one.
# NOTIFY is delivered at commit only, so a rolled-back job wakes nobody. The payload is the
# queue name, never the job's payload. (Alembic has no construct for functions and triggers.)
CREATE_NOTIFY_INSERT_FUNCTION = """
CREATE FUNCTION sqla_jobs_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sqla_jobs', queues.queue)
    FROM (SELECT DISTINCT queue FROM sqla_jobs_inserted) AS queues;
    RETURN NULL;
END
$$
"""

CREATE_NOTIFY_INSERT_TRIGGER = """
CREATE TRIGGER sqla_jobs_job_notify_insert
AFTER INSERT ON sqla_jobs_job
REFERENCING NEW TABLE AS sqla_jobs_inserted
FOR EACH STATEMENT EXECUTE FUNCTION sqla_jobs_notify_insert()
"""

DROP_NOTIFY_INSERT_TRIGGER = "DROP TRIGGER sqla_jobs_job_notify_insert ON sqla_jobs_job"
DROP_NOTIFY_INSERT_FUNCTION = "DROP FUNCTION sqla_jobs_notify_insert()"

CANCEL_REASON_MAX_BYTES = 7900
"""Bytes of the reason a cancel notification carries: NOTIFY takes fewer than 8 000 bytes, and
the ``<job id>:`` prefix takes 37."""

# A running job's worker hears of its cancellation at once: payload "<job id>:<reason>". The
# reason is cut to CANCEL_REASON_MAX_BYTES bytes of the database's encoding, on a character
# boundary: `left()` counts characters, so the loop drops a quarter of the excess (in
# characters, 1 to 4 bytes each) until the rest fits, never more than 3 bytes too many.
# Workers also look for requests at every heartbeat, so SQLite, or a notification lost to a
# reconnect, only delays a cancellation.
CREATE_NOTIFY_CANCEL_FUNCTION = f"""
CREATE OR REPLACE FUNCTION sqla_jobs_notify_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reason text := left(NEW.cancel_reason, {CANCEL_REASON_MAX_BYTES});
BEGIN
    WHILE octet_length(reason) > {CANCEL_REASON_MAX_BYTES} LOOP
        reason := left(
            reason,
            char_length(reason) - (octet_length(reason) - {CANCEL_REASON_MAX_BYTES} + 3) / 4
        );
    END LOOP;
    PERFORM pg_notify('sqla_jobs_cancel', NEW.id::text || ':' || reason);
    RETURN NULL;
END
$$
"""

CREATE_NOTIFY_CANCEL_TRIGGER = """
CREATE TRIGGER sqla_jobs_job_notify_cancel
AFTER UPDATE OF cancel_reason ON sqla_jobs_job
FOR EACH ROW
WHEN (NEW.cancel_reason IS NOT NULL AND NEW.locked_by IS NOT NULL)
EXECUTE FUNCTION sqla_jobs_notify_cancel()
"""

DROP_NOTIFY_CANCEL_TRIGGER = "DROP TRIGGER sqla_jobs_job_notify_cancel ON sqla_jobs_job"
DROP_NOTIFY_CANCEL_FUNCTION = "DROP FUNCTION sqla_jobs_notify_cancel()"

# Every job row is inserted, updated and deleted within minutes: with the default 20 % scale
# factors, dead rows pile up and the planner keeps statistics of a table long gone (after a bulk
# load it would sort the whole backlog at each claim until the next ANALYZE).
QUEUE_TABLE_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.02",
    "autovacuum_analyze_scale_factor = 0.02",
)
SET_JOB_TABLE_AUTOVACUUM = f"ALTER TABLE sqla_jobs_job SET ({', '.join(QUEUE_TABLE_AUTOVACUUM)})"
RESET_JOB_TABLE_AUTOVACUUM = (
    "ALTER TABLE sqla_jobs_job RESET "
    "(autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)"
)

AFTER_CREATE_JOB_TABLE = (
    CREATE_NOTIFY_INSERT_FUNCTION,
    CREATE_NOTIFY_INSERT_TRIGGER,
    CREATE_NOTIFY_CANCEL_FUNCTION,
    CREATE_NOTIFY_CANCEL_TRIGGER,
    SET_JOB_TABLE_AUTOVACUUM,
)
"""What the job table gets beside its columns and indexes, in order (PostgreSQL only)."""

BEFORE_DROP_JOB_TABLE = (
    DROP_NOTIFY_CANCEL_TRIGGER,
    DROP_NOTIFY_CANCEL_FUNCTION,
    DROP_NOTIFY_INSERT_TRIGGER,
    DROP_NOTIFY_INSERT_FUNCTION,
)
"""What must go before the job table does: the table takes its triggers along, not their
functions."""
