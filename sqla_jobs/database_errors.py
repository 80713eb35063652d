"""What counts as trouble talking to the database, and how to say it in one line.

Shared by the worker's retry helper (`sqla_jobs.store.retrying`), its startup check and the
operators' `sqla_jobs.admin.check`, which must not import the store.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)
"""Transient trouble talking to the database: log, back off, try again; never exit over it."""


def summarize_error(error: str) -> str:
    """Return the last line of a traceback (or error message): the exception type and message.

    SQLAlchemy appends the statement (often many lines) and a documentation link to its
    messages; both are cut, so the line names the driver's error instead of the link.
    """
    head, sql, _ = error.strip().rpartition("\n[SQL: ")
    lines = [
        line
        for line in (head if sql else error.strip()).splitlines()
        if line.strip() and not line.startswith("(Background on this error at:")
    ]
    return lines[-1] if lines else ""
