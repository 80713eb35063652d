"""One bulk INSERT of job rows, its rows sent as a single JSON parameter.

A multi-row ``INSERT ... VALUES`` has a parameter per value, and SQLAlchemy compiles it anew for
every chunk (it cannot cache it): for 1 000 jobs that costs more than the database's work. This
statement's SQL is the same for any number of rows, so it is compiled once and cached, and the
database unpacks the rows itself: ``jsonb_to_recordset`` on PostgreSQL, ``json_each`` on SQLite.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DateTime,
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
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from sqla_jobs.clock import db_now_plus
from sqla_jobs.models import Job

_TARGET = [
    "id",
    "name",
    "payload",
    "queue",
    "priority",
    "context",
    "timeout_seconds",
    "error_count",
    "run_at",
]


class InsertJobRows(Executable, ClauseElement):
    """INSERT the given job rows; execute it with `session.execute()` like any statement."""

    inherit_cache = True
    # Compiled as an INSERT, so the compiler asks the statement what it asks an Insert.
    _inline = False
    _return_defaults = False
    inserts_jobs = True
    """Marks the statement for the in-process wake-up hook (it is no `Insert` construct)."""
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy declares it
        ("rows", InternalTraversal.dp_clauseelement),
        ("delay", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, rows: list[dict[str, Any]], *, delay_seconds: float = 0.0) -> None:
        self.rows = bindparam("rows", _encode(rows), type_=Text())
        self.delay: BindParameter[float] = bindparam("delay", float(delay_seconds), type_=Float())


def _encode(rows: list[dict[str, Any]]) -> str:
    """Encode rows for the database: uuid as hex, `run_at` as UTC text with microseconds."""
    return json.dumps(
        [
            {
                "id": row["id"].hex,
                "name": row["name"],
                "payload": row["payload"],
                "queue": row["queue"],
                "priority": row["priority"],
                "context": row["context"],
                "timeout_seconds": row["timeout_seconds"],
                "run_at": _utc_text(row.get("run_at")),
            }
            for row in rows
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _utc_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    # "+00:00" is what PostgreSQL needs; SQLite reads the first 26 characters only.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00:00"


@compiles(InsertJobRows, "postgresql")
def _compile_postgresql(element: InsertJobRows, compiler: SQLCompiler, **kw: Any) -> str:
    rows = (
        func.jsonb_to_recordset(cast(element.rows, JSONB))
        .table_valued(
            column("id", Uuid()),
            column("name", String()),
            column("payload", JSONB()),
            column("queue", String()),
            column("priority", Integer()),
            column("context", Text()),
            column("timeout_seconds", Float()),
            column("run_at", DateTime(timezone=True)),
        )
        # A record-returning function needs its column definitions: AS r(id UUID, ...).
        .render_derived(name="r", with_types=True)
    )
    run_at = func.coalesce(rows.c.run_at, db_now_plus(element.delay))
    values = select(*(rows.c[c] for c in _TARGET[:7]), literal(0), run_at)
    return compiler.process(insert(Job).from_select(_TARGET, values), **kw)


@compiles(InsertJobRows, "sqlite")
def _compile_sqlite(element: InsertJobRows, compiler: SQLCompiler, **kw: Any) -> str:
    rows = func.json_each(element.rows).table_valued("value", name="r")

    def field(name: str) -> Any:
        return func.json_extract(rows.c.value, f"$.{name}")

    # SQLAlchemy stores SQLite times as "YYYY-MM-DD HH:MM:SS.ffffff" in UTC: 26 characters.
    run_at = func.coalesce(func.substr(field("run_at"), 1, 26), db_now_plus(element.delay))
    values = select(
        field("id"),
        field("name"),
        # json() keeps the payload JSON text, whatever json_extract makes of scalars.
        func.json(func.json_extract(rows.c.value, "$.payload")),
        field("queue"),
        field("priority"),
        field("context"),
        field("timeout_seconds"),
        literal(0),
        run_at,
    )
    return compiler.process(insert(Job).from_select(_TARGET, values), **kw)
