"""`enqueue_bulk()`: many jobs in one call, by COPY on the caller's own connection.

PostgreSQL's COPY streams rows without a statement per chunk to plan and a JSON document to
unpack, several times faster than `enqueue_many()`'s INSERT. It runs on the driver connection
under the caller's session (asyncpg's ``copy_records_to_table``, psycopg's ``cursor.copy``),
inside the caller's transaction, so the jobs commit or roll back with it. Other engines and
drivers get `enqueue_many()`'s statements, executed on the same session.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, overload

from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from . import wakeup
from .clock import db_insert_time_plus, db_now
from .dialects.insert_rows import JOB_ROW_COLUMNS, InsertJobRows
from .enqueue import JobRow, Schedule, job_row_chunks
from .errors import EnqueueError
from .models import Job
from .tasks import Task

Record = tuple[Any, ...]


@overload
def enqueue_bulk(
    session: AsyncSession,
    tasks: Iterable[Task],
    *,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
    max_payload_bytes: int | None = None,
    timeout: timedelta | None = None,
    chunk_size: int = 5000,
) -> Coroutine[Any, Any, int]: ...


@overload
def enqueue_bulk(
    session: Session,
    tasks: Iterable[Task],
    *,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
    max_payload_bytes: int | None = None,
    timeout: timedelta | None = None,
    chunk_size: int = 5000,
) -> int: ...


def enqueue_bulk(
    session: Session | AsyncSession,
    tasks: Iterable[Task],
    *,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
    max_payload_bytes: int | None = None,
    timeout: timedelta | None = None,
    chunk_size: int = 5000,
) -> int | Coroutine[Any, Any, int]:
    """Insert a job per task in the session's transaction; return how many were inserted.

    The options mean what they mean for `enqueue()` and apply to every task; bad options raise
    at the call. `tasks` is read `chunk_size` at a time, and each chunk is validated before
    any of it is written: a bad task raises `EnqueueError` (or `PayloadError`) naming its index,
    and nothing of its chunk reaches the database (earlier chunks have, in your transaction:
    roll it back). The jobs exist once the caller's transaction commits, and never if it rolls
    back. On PostgreSQL with asyncpg or psycopg the rows go by COPY; elsewhere by
    `enqueue_many()`'s statements.

    >>> count = await enqueue_bulk(session, (SendEmail(to=a) for a in addresses))
    >>> await session.commit()
    >>> enqueue_bulk(sync_session, tasks)  # a plain call on a sync Session
    """
    chunks, schedule = job_row_chunks(
        "enqueue_bulk",
        tasks,
        run_at=run_at,
        delay=delay,
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
        chunk_size=chunk_size,
    )
    if isinstance(session, AsyncSession):
        return _enqueue_bulk_async(session, chunks, schedule)
    if isinstance(session, Session):
        return _enqueue_bulk_sync(session, chunks, schedule)
    raise EnqueueError(
        f"enqueue_bulk() takes a Session or an AsyncSession, not {type(session).__name__}"
    )


async def _enqueue_bulk_async(
    session: AsyncSession, chunks: Iterator[list[JobRow]], schedule: Schedule
) -> int:
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return await _insert_async(session, chunks, schedule)
    # Through the session, so the driver's transaction has begun: the asyncpg adapter begins it
    # lazily at the first statement, and a COPY before that would commit on its own.
    clock = _Clock(*(await session.execute(_CLOCK)).one())
    driver: Any = (await connection.get_raw_connection()).driver_connection
    stream = _Stream(chunks, schedule, clock)
    if _is_asyncpg(driver):
        await driver.copy_records_to_table(
            Job.__tablename__, records=stream, columns=JOB_ROW_COLUMNS
        )
    elif _is_psycopg_async(driver):
        async with driver.cursor() as cursor, cursor.copy(_copy_statement()) as copy:
            for record in stream:
                await copy.write_row(record)
    else:
        return await _insert_async(session, chunks, schedule)
    wakeup.note_enqueued(session.sync_session)
    return stream.finish()


def _enqueue_bulk_sync(session: Session, chunks: Iterator[list[JobRow]], schedule: Schedule) -> int:
    connection = session.connection()
    if connection.dialect.name != "postgresql" or not _is_psycopg_sync(_driver(connection)):
        inserted = 0
        for chunk in chunks:
            session.execute(_insert(chunk, schedule))
            inserted += len(chunk)
        return inserted
    # Through the session, so the COPY belongs to the transaction the session began.
    clock = _Clock(*session.execute(_CLOCK).one())
    stream = _Stream(chunks, schedule, clock)
    with _driver(connection).cursor() as cursor, cursor.copy(_copy_statement()) as copy:
        for record in stream:
            copy.write_row(record)
    wakeup.note_enqueued(session)
    return stream.finish()


class _Stream:
    """The records of every chunk, for one COPY; a bad chunk ends the stream instead of the COPY.

    One COPY for the whole call lets the database write a chunk while Python builds the next.
    Raising inside the COPY would abort it and, with it, the caller's transaction; so an error
    building a chunk stops the records after the last good chunk, the COPY completes, and
    `finish()` raises the error: as with `enqueue_many()`, earlier chunks are written and
    nothing of the bad one is.
    """

    def __init__(self, chunks: Iterator[list[JobRow]], schedule: Schedule, clock: _Clock) -> None:
        self._chunks = chunks
        self._schedule = schedule
        self._clock = clock
        self._error: Exception | None = None
        self.inserted = 0

    def __iter__(self) -> Iterator[Record]:
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return
            except Exception as exc:
                self._error = exc
                return
            yield from _records(chunk, self._schedule, self._clock)
            self.inserted += len(chunk)

    def finish(self) -> int:
        """Return the number of rows sent, or raise the error that ended the stream early."""
        if self._error is not None:
            # Re-raised as the very exception, with its traceback (its index is in its message).
            raise self._error
        return self.inserted


async def _insert_async(
    session: AsyncSession, chunks: Iterator[list[JobRow]], schedule: Schedule
) -> int:
    inserted = 0
    for chunk in chunks:
        await session.execute(_insert(chunk, schedule))
        inserted += len(chunk)
    return inserted


def _insert(chunk: list[JobRow], schedule: Schedule) -> InsertJobRows:
    delay_seconds = None if schedule.delay is None else schedule.delay.total_seconds()
    return InsertJobRows(chunk, run_at=schedule.run_at, delay_seconds=delay_seconds)


_CLOCK = select(db_now(), db_insert_time_plus(0))
"""The transaction's start (the column default of `run_at`) and the database's time now."""


class _Clock:
    """The database's clock, read once and advanced by this process's monotonic clock."""

    def __init__(self, transaction_start: datetime, now: datetime) -> None:
        self.transaction_start = transaction_start
        self._now = now
        self._read_at = time.monotonic()

    def now(self) -> datetime:
        """Return the database's time now, as of the reading plus the time elapsed since."""
        return self._now + timedelta(seconds=time.monotonic() - self._read_at)


def _records(chunk: list[JobRow], schedule: Schedule, clock: _Clock) -> Iterator[Record]:
    if schedule.run_at is not None:
        run_at = schedule.run_at
    elif schedule.delay is not None:
        # Counted from this chunk's insert, as enqueue() counts from its own.
        run_at = clock.now() + schedule.delay
    else:
        run_at = clock.transaction_start
    return ((*row, 0, run_at) for row in chunk)


def _driver(connection: Connection) -> Any:
    return connection.connection.driver_connection


# The drivers are imported when first needed: an application may use only one of them.


def _is_asyncpg(driver: object) -> bool:
    import asyncpg

    return isinstance(driver, asyncpg.Connection)


def _is_psycopg_sync(driver: object) -> bool:
    import psycopg

    return isinstance(driver, psycopg.Connection)


def _is_psycopg_async(driver: object) -> bool:
    import psycopg

    return isinstance(driver, psycopg.AsyncConnection)


def _copy_statement() -> Any:
    """Return psycopg's COPY statement for the job rows (COPY has no SQLAlchemy construct)."""
    from psycopg import sql

    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(Job.__tablename__), sql.SQL(", ").join(map(sql.Identifier, JOB_ROW_COLUMNS))
    )
