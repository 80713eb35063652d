"""The ORM models: `Job` (a pending or running job), `DeadLetterJob` (one that gave up),
`QueueLimit` (a queue's cluster-wide cap on running jobs) and `MinuteCount` (jobs finished per
minute, for throughput charts).

A job's life is its row: inserted by `enqueue()` in the application's transaction, locked by a
worker (`locked_by`, `locked_at`), then deleted on success, rescheduled on failure, or moved to
`sqla_jobs_dead_letter_job` once its retries are spent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.ddl import ExecutableDDLElement

from .clock import UTCDateTime, db_now
from .ddl import AFTER_CREATE_JOB_TABLE, BEFORE_DROP_JOB_TABLE
from .ids import new_job_id

JSONObject = dict[str, Any]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Payload = JSON().with_variant(JSONB(), "postgresql")

WAITING = text("locked_by IS NULL AND cancel_reason IS NULL")
"""The predicate of the waiting-job indexes; a query must repeat it for the planner to use them."""
DEFERRED = text("locked_by IS NULL AND cancel_reason IS NULL AND run_at > created_at")
"""The predicate of the index `next_due` reads: waiting jobs that were scheduled or retried."""
LOCKED = text("locked_by IS NOT NULL")
HAS_UNIQUE_KEY = text("unique_key IS NOT NULL")
"""The predicate of the unique-key index; `enqueue_unique`'s ON CONFLICT repeats it."""


class Base(DeclarativeBase):
    """The declarative base of sqla_jobs' own tables; its metadata is what the migrations create."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), JSONObject: Payload}


class Job(Base):
    """A job waiting to run, or running under a worker's lock."""

    __tablename__ = "sqla_jobs_job"
    # Server defaults (created_at, run_at) are not fetched back at flush: RETURNING them costs a
    # fifth of a one-job enqueue, for values an application rarely reads right away (it can
    # `await session.refresh(job)`).
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012 - SQLAlchemy declares it

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_job_id)
    name: Mapped[str] = mapped_column(String(255))
    payload: Mapped[JSONObject]
    queue: Mapped[str] = mapped_column(String(255), server_default="default")
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    run_at: Mapped[datetime] = mapped_column(server_default=db_now())
    created_at: Mapped[datetime] = mapped_column(server_default=db_now())
    context: Mapped[str] = mapped_column(Text, server_default="")
    error_count: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_failed_at: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(255))
    locked_at: Mapped[datetime | None]
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    """This job's time limit, overriding its task's `timeout` option; None: the task's."""
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    """Set by `cancel()`: the job is to be stopped (if running) and dead-lettered."""
    unique_key: Mapped[str | None] = mapped_column(Text)
    """Set by `enqueue_unique()`: no other job of this task holds the same key while this row
    exists (queued, scheduled, retrying or running)."""
    snooze_count: Mapped[int] = mapped_column(Integer, server_default="0")
    """How many times the job raised `Snooze`; past its task's `max_snoozes` it is dead-lettered."""
    trace_context: Mapped[str | None] = mapped_column(Text)
    """The W3C ``traceparent`` of the span that enqueued it, when tracing is on."""

    __table_args__ = (
        # The claim's index: waiting jobs only (running and cancelled ones are left out), in the
        # claim's order within a queue. Within a priority, due jobs sort before future ones, so
        # a claim reads LIMIT entries and stops, whatever the backlog of future and retrying
        # jobs. `id` makes the order total, as the claim's ORDER BY does.
        Index(
            "ix_sqla_jobs_job_waiting_claim",
            "queue",
            priority.desc(),
            "run_at",
            "id",
            postgresql_where=WAITING,
            sqlite_where=WAITING,
        ),
        # Finds the earliest future job of a queue in one index probe, so an idle worker wakes
        # exactly then. Only deferred jobs (scheduled or retried: a job enqueued to run at once
        # has run_at = created_at), since a future job always is one. The claim never states
        # `run_at > created_at`, so the planner cannot read this index for it (it would fetch
        # every due job and sort them).
        Index(
            "ix_sqla_jobs_job_deferred_run_at",
            "queue",
            "run_at",
            postgresql_where=DEFERRED,
            sqlite_where=DEFERRED,
        ),
        # Only running jobs: a worker's own jobs (completion, release, cancel requests) and the
        # rescue of dead workers' jobs; the backlog of waiting jobs costs it nothing.
        Index(
            "ix_sqla_jobs_job_locked_by",
            "locked_by",
            postgresql_where=LOCKED,
            sqlite_where=LOCKED,
        ),
        # Only cancelled jobs: the heartbeats' search for them reads a handful of entries.
        Index(
            "ix_sqla_jobs_job_cancel_requested",
            "id",
            postgresql_where=text("cancel_reason IS NOT NULL"),
            sqlite_where=text("cancel_reason IS NOT NULL"),
        ),
        # Unique jobs: one row per (task, key) while it exists. Partial, so the many jobs
        # without a key cost it nothing; INSERT ... ON CONFLICT DO NOTHING relies on it.
        Index(
            "ix_sqla_jobs_job_unique_key",
            "name",
            "unique_key",
            unique=True,
            postgresql_where=HAS_UNIQUE_KEY,
            sqlite_where=HAS_UNIQUE_KEY,
        ),
    )

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name!r} queue={self.queue!r} errors={self.error_count}>"


def _on_postgresql(statement: str) -> ExecutableDDLElement:
    ddl = DDL(statement)  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL() untyped
    return ddl.execute_if(dialect="postgresql")


# So that `Base.metadata.create_all()` builds what the migrations build: the notification
# triggers and the table's autovacuum settings, from the text the migrations run.
for _statement in AFTER_CREATE_JOB_TABLE:
    event.listen(Job.__table__, "after_create", _on_postgresql(_statement))
for _statement in BEFORE_DROP_JOB_TABLE:
    event.listen(Job.__table__, "before_drop", _on_postgresql(_statement))


class WorkerRecord(Base):
    """A running worker process, kept alive by its heartbeat; how others tell it has died."""

    __tablename__ = "sqla_jobs_worker"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    """The worker id, the value of `Job.locked_by` for the jobs it holds."""
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    started_at: Mapped[datetime] = mapped_column(server_default=db_now())
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=db_now(), index=True)

    def __repr__(self) -> str:
        return f"<WorkerRecord {self.id} heartbeat_at={self.heartbeat_at}>"


class DeadLetterJob(Base):
    """A job that failed more than its `max_retries` allow, kept for inspection and replay."""

    __tablename__ = "sqla_jobs_dead_letter_job"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_job_id)
    original_job_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    name: Mapped[str] = mapped_column(String(255))
    payload: Mapped[JSONObject]
    queue: Mapped[str] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer)
    context: Mapped[str] = mapped_column(Text)
    error_count: Mapped[int] = mapped_column(Integer)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    failed_at: Mapped[datetime] = mapped_column(server_default=db_now(), index=True)
    unique_key: Mapped[str | None] = mapped_column(Text)
    """The unique job's key, kept for inspection only: a dead letter holds no key, so a new job
    with the same key may be enqueued (`redrive` then leaves this one where it is)."""

    def __repr__(self) -> str:
        return f"<DeadLetterJob {self.id} {self.name!r} original={self.original_job_id}>"


class PeriodicSlot(Base):
    """A slot of a periodic schedule whose job was enqueued: at most one row per slot.

    Inserted in the transaction that inserts the slot's job; its primary key is what lets one
    worker, and only one, enqueue each slot (see `sqla_jobs.worker.scheduler`). Workers prune
    old rows, keeping each schedule's latest.
    """

    __tablename__ = "sqla_jobs_periodic_slot"

    schedule: Mapped[str] = mapped_column(String(255), primary_key=True)
    slot_at: Mapped[datetime] = mapped_column(primary_key=True)
    """The instant the slot was due (UTC)."""
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """The job enqueued for the slot (it may since have run and been deleted)."""
    enqueued_at: Mapped[datetime] = mapped_column(server_default=db_now())

    def __repr__(self) -> str:
        return f"<PeriodicSlot {self.schedule!r} {self.slot_at.isoformat()}>"


class QueueLimit(Base):
    """At most `max_running` jobs of `queue` run at once, across every worker on every host.

    Enforced by the claim (see `JobStore.claim`); set with `admin.set_queue_limit`, or by a
    worker started with ``queue_limits``. A queue without a row has no such limit.
    """

    __tablename__ = "sqla_jobs_queue_limit"

    queue: Mapped[str] = mapped_column(String(255), primary_key=True)
    max_running: Mapped[int] = mapped_column(Integer)
    """0 pauses the queue: no new job of it starts anywhere."""

    __table_args__ = (CheckConstraint("max_running >= 0", name="max_running_not_negative"),)

    def __repr__(self) -> str:
        return f"<QueueLimit {self.queue!r} max_running={self.max_running}>"


class MinuteCount(Base):
    """How many jobs of a task in a queue ended one way in one minute, on every worker.

    Workers add their counts once a minute (an upsert adding to the row) and delete rows older
    than `sqla_jobs.throughput.RETENTION`; `sqla_jobs.throughput.throughput` reads them.
    """

    __tablename__ = "sqla_jobs_minute_count"

    minute: Mapped[datetime] = mapped_column(primary_key=True)
    """The minute's start (UTC, by the clock of the workers that ran the jobs)."""
    queue: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``success``, ``retry``, ``dead``, ``cancelled``, ``snoozed`` or ``rescued``."""
    count: Mapped[int] = mapped_column(BigInteger)
    duration_seconds: Mapped[float] = mapped_column(Float)
    """The jobs' run times added up (0 for rescued jobs, which did not run)."""

    def __repr__(self) -> str:
        return (
            f"<MinuteCount {self.minute.isoformat()} {self.queue!r} {self.name!r} {self.outcome}>"
        )
