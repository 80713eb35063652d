"""In-process wake-ups: a commit that enqueued jobs wakes the workers running in this process.

This is how an application that runs its worker in-process gets its jobs started at once on
SQLite, which has no NOTIFY (on PostgreSQL the insert trigger's NOTIFY reaches every process).
The Session event hooks exist only while a worker of this process is subscribed: the first
`subscribe()` installs them and the last unsubscribe removes them, so an application without a
worker in its process keeps its sessions free of our listeners.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from sqla_jobs.models import Job

_ENQUEUED = "sqla_jobs.enqueued"
# Guards _waiters and the installing and removing of the hooks, which must happen together.
_lock = threading.Lock()
_waiters: set[Callable[[], None]] = set()


def subscribe(wake: Callable[[], None]) -> Callable[[], None]:
    """Call `wake` after each commit that enqueued jobs, from any thread; return an unsubscriber.

    >>> unsubscribe = subscribe(lambda: print("jobs enqueued"))
    >>> unsubscribe()
    """
    with _lock:
        if not _waiters:
            _install_hooks()
        _waiters.add(wake)

    def unsubscribe() -> None:
        with _lock:
            if wake not in _waiters:
                return
            _waiters.discard(wake)
            if not _waiters:
                _remove_hooks()

    return unsubscribe


def note_enqueued(session: Session) -> None:
    """Wake the subscribers when `session` commits: it enqueued jobs without the ORM seeing it."""
    if _waiters:
        session.info[_ENQUEUED] = True


def _wake_all() -> None:
    with _lock:
        waiters = list(_waiters)
    for wake in waiters:
        wake()


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    if _waiters and any(isinstance(obj, Job) for obj in session.new):
        session.info[_ENQUEUED] = True


def _on_execute(state: ORMExecuteState) -> None:
    # Statements built by enqueue_many() are executed, not flushed.
    if _waiters and _inserts_jobs(state.statement):
        state.session.info[_ENQUEUED] = True


def _inserts_jobs(statement: Any) -> bool:
    # enqueue_many()'s statement is no Insert construct: it says so itself.
    if getattr(statement, "inserts_jobs", False):
        return True
    return bool(getattr(statement, "is_insert", False)) and (
        getattr(statement, "table", None) is Job.__table__
    )


def _after_commit(session: Session) -> None:
    if session.info.pop(_ENQUEUED, False):
        _wake_all()


def _after_rollback(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)


_HOOKS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("after_flush", _after_flush),
    ("do_orm_execute", _on_execute),
    ("after_commit", _after_commit),
    ("after_rollback", _after_rollback),
)


def _install_hooks() -> None:
    for name, hook in _HOOKS:
        event.listen(Session, name, hook)


def _remove_hooks() -> None:
    for name, hook in _HOOKS:
        if event.contains(Session, name, hook):
            event.remove(Session, name, hook)


def hooks_installed() -> bool:
    """Tell whether the Session hooks are installed (while some worker is subscribed)."""
    return any(event.contains(Session, name, hook) for name, hook in _HOOKS)
