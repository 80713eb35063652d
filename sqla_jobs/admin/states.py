"""The state of a job, derived from its row and the database's clock, as SQL expressions.

A row of ``sqla_jobs_job`` is in exactly one of `JobState`'s states other than ``dead``; a row
of ``sqla_jobs_dead_letter_job`` is ``dead``. The states are computed in the database
(`db_now()`), so every reader agrees with the workers on what is due.
"""

from __future__ import annotations

import enum
from typing import assert_never

from sqlalchemy import and_, case, literal
from sqlalchemy.sql.elements import ColumnElement

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job


class JobState(enum.StrEnum):
    """Where a job stands: waiting (`DUE`, `SCHEDULED`, `RETRYING`), `RUNNING`, or finished badly.

    >>> await list_jobs(session, state=JobState.RETRYING)
    """

    DUE = "due"
    """Waiting, and its run_at has come: the next free worker takes it."""
    SCHEDULED = "scheduled"
    """Waiting for a run_at in the future, without a failure so far."""
    RETRYING = "retrying"
    """Waiting for a run_at in the future after at least one failure."""
    RUNNING = "running"
    """Locked by a worker (`locked_by` is set)."""
    CANCELLED = "cancelled"
    """Cancelled while waiting; the next heartbeat of any worker moves it to the dead letters."""
    DEAD = "dead"
    """A dead letter: retries spent, discarded or cancelled; kept for inspection and retry."""


JOB_STATES = tuple(state for state in JobState if state is not JobState.DEAD)
"""The states of a row of the job table (every state but `DEAD`)."""


def _is_waiting() -> ColumnElement[bool]:
    # Spelled as the waiting-job indexes' predicate, so the planner can use them.
    return and_(Job.locked_by.is_(None), Job.cancel_reason.is_(None))


def state_condition(state: JobState) -> ColumnElement[bool]:
    """Return the condition a row of the job table meets when it is in `state`."""
    match state:
        case JobState.DUE:
            return and_(_is_waiting(), Job.run_at <= db_now())
        case JobState.SCHEDULED:
            return and_(_is_waiting(), Job.run_at > db_now(), Job.error_count == 0)
        case JobState.RETRYING:
            return and_(_is_waiting(), Job.run_at > db_now(), Job.error_count > 0)
        case JobState.RUNNING:
            return Job.locked_by.is_not(None)
        case JobState.CANCELLED:
            return and_(Job.locked_by.is_(None), Job.cancel_reason.is_not(None))
        case JobState.DEAD:
            # No row of the job table is dead: dead letters have a table of their own.
            return literal(False)
        case _:
            assert_never(state)


def job_state() -> ColumnElement[str]:
    """Return the state of a row of the job table as a SQL expression (`JobState` values)."""
    return case(
        *((state_condition(state), state.value) for state in JOB_STATES),
        else_=JobState.DUE.value,
    )
