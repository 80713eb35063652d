"""The upsert of a queue's limit: ``INSERT ... ON CONFLICT (queue) DO UPDATE``.

Both dialects spell it the same, but SQLAlchemy builds it with each dialect's own `insert`; this
statement picks the right one when it is compiled, so `admin.set_queue_limit` returns one
statement that the caller's session runs, whatever its database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from sqla_jobs.models import QueueLimit


class UpsertQueueLimit(Executable, ClauseElement):
    """Set `queue`'s limit to `max_running`, inserting its row or replacing its value."""

    inherit_cache = True
    # Compiled as an INSERT, so the compiler asks the statement what it asks an Insert.
    _inline = False
    _return_defaults = False
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy declares it
        ("queue", InternalTraversal.dp_clauseelement),
        ("max_running", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, queue: str, max_running: int) -> None:
        self.queue: BindParameter[str] = bindparam("queue", queue, type_=String())
        self.max_running: BindParameter[int] = bindparam(
            "max_running", max_running, type_=Integer()
        )


@compiles(UpsertQueueLimit, "postgresql")
def _compile_postgresql(element: UpsertQueueLimit, compiler: SQLCompiler, **kw: Any) -> str:
    insert = postgresql.insert(QueueLimit).values(
        queue=element.queue, max_running=element.max_running
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[QueueLimit.queue], set_={"max_running": insert.excluded.max_running}
    )
    return compiler.process(upsert, **kw)


@compiles(UpsertQueueLimit, "sqlite")
def _compile_sqlite(element: UpsertQueueLimit, compiler: SQLCompiler, **kw: Any) -> str:
    insert = sqlite.insert(QueueLimit).values(queue=element.queue, max_running=element.max_running)
    upsert = insert.on_conflict_do_update(
        index_elements=[QueueLimit.queue], set_={"max_running": insert.excluded.max_running}
    )
    return compiler.process(upsert, **kw)
