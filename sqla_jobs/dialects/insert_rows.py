"""The INSERT of `enqueue_many()`: many job rows sent as a single JSON parameter.

A multi-row ``INSERT ... VALUES`` has a parameter per value, and SQLAlchemy compiles it anew for
every chunk (it cannot cache it): for 1 000 jobs that costs more than the database's work. This
statement's SQL is the same for any number of rows, so it is compiled once and cached, and the
database unpacks the rows itself: ``jsonb_to_recordset`` on PostgreSQL, ``json_each`` on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    Text,
    Uuid,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from sqla_jobs.clock import UTCDateTime, db_insert_time_plus, db_now
from sqla_jobs.models import Job

if TYPE_CHECKING:
    from sqla_jobs.enqueue import JobRow

JOB_ROW_COLUMNS = (
    "id",
    "name",
    "payload",
    "queue",
    "priority",
    "context",
    "timeout_seconds",
    "error_count",
    "run_at",
)
"""The columns every bulk form of enqueue fills: `JobRow`'s order, then error_count, run_at."""


class JobInsert(Executable, ClauseElement):
    """An INSERT into the job table built at compile time for the dialect that runs it."""

    inherit_cache = True
    # Compiled as an INSERT, so the compiler asks the statement what it asks an Insert.
    _inline = False
    _return_defaults = False
    inserts_jobs = True
    """Marks the statement for the in-process wake-up hook (it is no `Insert` construct)."""


class InsertJobRows(JobInsert):
    """INSERT the given job rows; execute it with `session.execute()` like any statement.

    Every row is due at `run_at` if given, else `delay_seconds` after its insert if given, else
    at the database's now.
    """

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy declares it
        ("rows", InternalTraversal.dp_clauseelement),
        ("run_at", InternalTraversal.dp_clauseelement),
        ("delay", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self,
        rows: Sequence[JobRow],
        *,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
    ) -> None:
        self.rows = bindparam("rows", _encode(rows), type_=Text())
        self.run_at: BindParameter[datetime] = bindparam("run_at", run_at, type_=UTCDateTime())
        self.delay: BindParameter[float] = bindparam("delay", delay_seconds, type_=Float())

    def due_at(self) -> ColumnElement[datetime]:
        """The rows' `run_at`: the given instant, else the delay after the insert, else now."""
        # db_insert_time_plus(NULL) is NULL, so one cached statement serves all three cases.
        return func.coalesce(self.run_at, db_insert_time_plus(self.delay), db_now())


def _encode(rows: Sequence[JobRow]) -> str:
    """Encode rows for the database: the payload as its JSON text."""
    return json.dumps(
        [
            {
                "id": row.id,
                "name": row.name,
                "payload": row.payload,
                "queue": row.queue,
                "priority": row.priority,
                "context": row.context,
                "timeout_seconds": row.timeout_seconds,
            }
            for row in rows
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


@compiles(InsertJobRows, "postgresql")
def _compile_postgresql(element: InsertJobRows, compiler: SQLCompiler, **kw: Any) -> str:
    rows = (
        func.jsonb_to_recordset(cast(element.rows, JSONB))
        .table_valued(
            column("id", Uuid()),
            column("name", String()),
            column("payload", Text()),
            column("queue", String()),
            column("priority", Integer()),
            column("context", Text()),
            column("timeout_seconds", Float()),
        )
        # A record-returning function needs its column definitions: AS r(id UUID, ...).
        .render_derived(name="r", with_types=True)
    )
    columns: list[ColumnElement[Any]] = [rows.c[c] for c in JOB_ROW_COLUMNS[:7]]
    # The payload travels as JSON text inside the rows' JSON; parsed once more here.
    columns[2] = cast(rows.c.payload, JSONB)
    values = select(*columns, literal(0), element.due_at())
    return compiler.process(insert(Job).from_select(JOB_ROW_COLUMNS, values), **kw)


@compiles(InsertJobRows, "sqlite")
def _compile_sqlite(element: InsertJobRows, compiler: SQLCompiler, **kw: Any) -> str:
    rows = func.json_each(element.rows).table_valued("value", name="r")

    def field(name: str) -> Any:
        return func.json_extract(rows.c.value, f"$.{name}")

    values = select(
        field("id"),
        field("name"),
        # The payload travels as JSON text; json() checks and minifies it.
        func.json(field("payload")),
        field("queue"),
        field("priority"),
        field("context"),
        field("timeout_seconds"),
        literal(0),
        element.due_at(),
    )
    return compiler.process(insert(Job).from_select(JOB_ROW_COLUMNS, values), **kw)
