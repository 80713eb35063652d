"""In-process wake-ups: a commit that enqueued jobs wakes the workers running in this process.

This is how an application that runs its worker in-process gets its jobs started at once on
SQLite, which has no NOTIFY (on PostgreSQL the insert trigger's NOTIFY reaches every process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from sqla_jobs.models import Job

_ENQUEUED = "sqla_jobs.enqueued"
_lock = threading.Lock()
_waiters: set[Callable[[], None]] = set()


def subscribe(wake: Callable[[], None]) -> Callable[[], None]:
    """Call `wake` after each commit that enqueued jobs, from any thread; return an unsubscriber."""
    with _lock:
        _waiters.add(wake)

    def unsubscribe() -> None:
        with _lock:
            _waiters.discard(wake)

    return unsubscribe


def _wake_all() -> None:
    with _lock:
        waiters = list(_waiters)
    for wake in waiters:
        wake()


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    if _waiters and any(isinstance(obj, Job) for obj in session.new):
        session.info[_ENQUEUED] = True


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    # Statements built by enqueue_many() are executed, not flushed.
    if _waiters and state.is_insert and _inserts_jobs(state.statement):
        state.session.info[_ENQUEUED] = True


def _inserts_jobs(statement: Any) -> bool:
    return getattr(statement, "table", None) is Job.__table__


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_ENQUEUED, False):
        _wake_all()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)
