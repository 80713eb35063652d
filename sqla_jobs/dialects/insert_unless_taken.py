"""INSERT ... SELECT ... ON CONFLICT DO NOTHING on any supported dialect, as one statement.

SQLAlchemy's ON CONFLICT belongs to each dialect's own `insert()` construct, but the statements of
`enqueue_unique()` and `redrive()` are built before anyone knows which database will run them
(sync Session or AsyncSession, PostgreSQL or SQLite). This element stands for the insert until it
is compiled, then builds it with the insert of the dialect it is compiled for.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from sqla_jobs.models import HAS_UNIQUE_KEY, Job

from .insert_rows import JobInsert


class InsertJobsUnlessTaken(JobInsert):
    """INSERT into the job table the rows `rows` selects, skipping each that a row already there
    conflicts with; execute it with `session.execute()`; its rowcount is the rows inserted.

    `on_unique_key`: only a taken (name, unique_key) is skipped, through the unique-key index
    (any other conflict raises); otherwise any conflict is (the primary key too).
    """

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy declares it
        ("columns", InternalTraversal.dp_string_list),
        ("rows", InternalTraversal.dp_clauseelement),
        ("on_unique_key", InternalTraversal.dp_boolean),
    ]

    def __init__(
        self,
        columns: Sequence[str],
        rows: Select[*tuple[Any, ...]],
        *,
        on_unique_key: bool,
        job_id: uuid.UUID | None = None,
    ) -> None:
        self.columns = list(columns)
        self.rows = rows
        self.on_unique_key = on_unique_key
        self.job_id = job_id
        """The id the job gets if it is inserted (`enqueue_unique`), else None."""
        # A driver's rowcount of an INSERT is read before its cursor closes only when asked:
        # psycopg reports -1 otherwise.
        self._execution_options = self._execution_options.union({"preserve_rowcount": True})


@compiles(InsertJobsUnlessTaken, "postgresql")
def _compile_postgresql(element: InsertJobsUnlessTaken, compiler: SQLCompiler, **kw: Any) -> str:
    statement = postgresql.insert(Job).from_select(element.columns, element.rows)
    if element.on_unique_key:
        statement = statement.on_conflict_do_nothing(
            index_elements=[Job.name, Job.unique_key], index_where=HAS_UNIQUE_KEY
        )
    else:
        statement = statement.on_conflict_do_nothing()
    return compiler.process(statement, **kw)


@compiles(InsertJobsUnlessTaken, "sqlite")
def _compile_sqlite(element: InsertJobsUnlessTaken, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's documented parsing ambiguity: in INSERT ... SELECT ... ON CONFLICT, the SELECT
    # needs a WHERE clause, or ON may be read as the start of a join constraint.
    statement = sqlite.insert(Job).from_select(element.columns, element.rows.where(true()))
    if element.on_unique_key:
        statement = statement.on_conflict_do_nothing(
            index_elements=[Job.name, Job.unique_key], index_where=HAS_UNIQUE_KEY
        )
    else:
        statement = statement.on_conflict_do_nothing()
    return compiler.process(statement, **kw)
