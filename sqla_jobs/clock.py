"""The database clock: SQL expressions for "now" and "now + seconds", compiled per dialect.

Every instant sqla_jobs compares (due, locked too long, retry later) is computed by the
database, so workers and applications whose clocks disagree still agree on what is due.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

# SQLite has no clock type; strftime with %f keeps milliseconds, which FIFO ordering needs.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class db_now(FunctionElement[datetime]):
    """The database's current time."""

    type = UTCDateTime()
    inherit_cache = True


class db_now_plus(FunctionElement[datetime]):
    """The database's current time plus a number of seconds (negative for the past)."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float | ColumnElement[float]) -> None:
        if not isinstance(seconds, ColumnElement):
            seconds = literal(float(seconds), Float())
        super().__init__(seconds)


@compiles(db_now)
def _compile_now_default(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(db_now, "postgresql")
def _compile_now_postgresql(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(db_now, "sqlite")
def _compile_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return _SQLITE_NOW


@compiles(db_now_plus, "postgresql")
def _compile_now_plus_postgresql(element: db_now_plus, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(now() + CAST({seconds} AS DOUBLE PRECISION) * INTERVAL '1 second')"


@compiles(db_now_plus, "sqlite")
def _compile_now_plus_sqlite(element: db_now_plus, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({seconds}) || ' seconds')"


class db_insert_time_plus(db_now_plus):
    """The database's time at this very statement plus a number of seconds (for `delay=`).

    Unlike `db_now` (on PostgreSQL the start of the transaction, which comparisons want), this
    moves on within a transaction, so a job enqueued late in a long transaction with a delay is
    due that long after its insert. A NULL number of seconds gives NULL.
    """

    inherit_cache = True


@compiles(db_insert_time_plus, "postgresql")
def _compile_insert_time_plus_postgresql(
    element: db_insert_time_plus, compiler: SQLCompiler, **kw: Any
) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(clock_timestamp() + CAST({seconds} AS DOUBLE PRECISION) * INTERVAL '1 second')"


# SQLite's 'now' is already the time of the current statement: the same SQL as db_now_plus.
compiles(db_insert_time_plus, "sqlite")(_compile_now_plus_sqlite)


class db_time_bucket(FunctionElement[int]):
    """The start of the `seconds`-long period that holds the database's now, in Unix seconds.

    Periods are aligned on the Unix epoch (an hour starts on the hour, UTC; a day at midnight,
    UTC). On PostgreSQL "now" is the start of the transaction, as for `db_now`.
    """

    type = BigInteger()
    inherit_cache = True

    def __init__(self, seconds: int) -> None:
        super().__init__(literal(int(seconds), BigInteger()))


@compiles(db_time_bucket, "postgresql")
def _compile_time_bucket_postgresql(
    element: db_time_bucket, compiler: SQLCompiler, **kw: Any
) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(CAST(floor(extract(epoch FROM now()) / {seconds}) AS BIGINT) * {seconds})"


@compiles(db_time_bucket, "sqlite")
def _compile_time_bucket_sqlite(element: db_time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    # Integer division of a non-negative number rounds down, as floor() does.
    seconds = compiler.process(element.clauses, **kw)
    return f"((CAST(strftime('%s', 'now') AS INTEGER) / {seconds}) * {seconds})"
