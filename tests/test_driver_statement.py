"""The claim run on asyncpg's connection beneath SQLAlchemy's: the same jobs as SQLAlchemy would
return, SQLAlchemy's errors, and SQLAlchemy's own execution wherever the driver would differ."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqla_jobs import Job, JobContext, Task, enqueue
from sqla_jobs.context import ClaimedJob
from sqla_jobs.dialects import claim_limit_values
from sqla_jobs.engine import create_engine
from sqla_jobs.store import JobStore
from sqla_jobs.store.driver import DriverStatement
from tests.helpers import TestDatabase, add_jobs


class Driven(Task, name="tests.driver.driven"):
    text: str = ""

    async def run(self, ctx: JobContext) -> None:
        return None


def claim_of(store: JobStore, queue: str, limit: int) -> DriverStatement:
    statement = store.statements.claim_jobs(worker_id="w1", queues=[queue], limit=limit)
    return DriverStatement(statement, store.engine.dialect)


async def claimed(
    engine: AsyncEngine, claim: DriverStatement, queue: str, limit: int
) -> list[ClaimedJob]:
    async with engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        keys, rows = await claim.fetch(connection, claim_limit_values([queue], limit))
    return ClaimedJob.from_rows(keys, rows)


async def test_the_driver_returns_the_jobs_sqlalchemy_returns(pg_database: TestDatabase) -> None:
    """Every field of every claimed job, values and types alike, whichever way it ran."""
    engine = create_async_engine(pg_database.url)
    store = JobStore(engine)
    try:
        await add_jobs(
            engine,
            enqueue(Driven(text="é ☃ \\u0000-free"), priority=3, context="signup"),
            enqueue(Driven(), timeout=timedelta(seconds=7.5), queue="default"),
            enqueue(Driven(), run_at=datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
        )
        on_driver = claim_of(store, "default", 10)
        through_sqlalchemy = claim_of(store, "default", 10)
        through_sqlalchemy.runs_on_driver = False
        first = await claimed(engine, on_driver, "default", 10)
        assert on_driver.runs_on_driver is True
        async with engine.begin() as connection:
            await connection.execute(update(Job).values(locked_by=None, locked_at=None))
        second = await claimed(engine, through_sqlalchemy, "default", 10)
        assert len(first) == 3
        assert sorted(first) == sorted(second)
        for a, b in zip(sorted(first), sorted(second), strict=True):
            assert [type(value) for value in a] == [type(value) for value in b]
        # Nothing left to claim: no rows, and no error for want of a row to name the columns.
        assert await claimed(engine, on_driver, "default", 10) == []
    finally:
        await engine.dispose()


async def test_an_engine_that_names_its_prepared_statements_claims_through_sqlalchemy(
    pg_database: TestDatabase,
) -> None:
    """An application that turned SQLAlchemy's statement cache off (PgBouncer in transaction
    mode, say) has every statement prepared its way, the claim included."""
    engine = create_async_engine(f"{pg_database.url}?prepared_statement_cache_size=0")
    store = JobStore(engine)
    try:
        [job_id] = await add_jobs(engine, enqueue(Driven()))
        claim = claim_of(store, "default", 10)
        [job] = await claimed(engine, claim, "default", 10)
        assert job.id == job_id
        assert claim.runs_on_driver is False
    finally:
        await engine.dispose()


async def test_sqlite_claims_through_sqlalchemy(sqlite_database: TestDatabase) -> None:
    engine = create_async_engine(sqlite_database.url)
    store = JobStore(engine)
    try:
        [job_id] = await add_jobs(engine, enqueue(Driven()))
        claim = claim_of(store, "default", 10)
        assert claim.runs_on_driver is False
        [job] = await claimed(engine, claim, "default", 10)
        assert job.id == job_id
    finally:
        await engine.dispose()


async def test_a_statement_the_database_refuses_raises_sqlalchemys_error(
    pg_database: TestDatabase,
) -> None:
    """What the claim loop backs off on; the connection stays usable."""
    engine = create_engine(pg_database.url)  # sqla_jobs': parameters hidden
    store = JobStore(engine)
    try:
        await add_jobs(engine, enqueue(Driven()))
        statement = update(Job).values(priority=bindparam("priority")).returning(Job.id)
        prioritize = DriverStatement(statement, store.engine.dialect)
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await prioritize.fetch(connection, {"priority": 1})
            assert prioritize.runs_on_driver is True
            with pytest.raises(DBAPIError, match="out of int32 range") as raised:
                await prioritize.fetch(connection, {"priority": 2**40})
            assert not raised.value.connection_invalidated
            # As SQLAlchemy's own errors on sqla_jobs' engines: no values in the message.
            assert "1099511627776]" not in str(raised.value)
            assert "hide_parameters" in str(raised.value)
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


async def test_a_connection_that_died_under_the_driver_is_invalidated(
    pg_database: TestDatabase,
) -> None:
    """The pool never lends it again: the next checkout has a working connection."""
    engine = create_async_engine(pg_database.url)
    store = JobStore(engine)
    try:
        claim = claim_of(store, "default", 10)
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await claim.fetch(connection, claim_limit_values(["default"], 1))
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            async with engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                await claim.fetch(connection, claim_limit_values(["default"], 1))
            assert raised.value.connection_invalidated
            assert connection.invalidated
        [job_id] = await add_jobs(engine, enqueue(Driven()))
        assert [job.id for job in await claimed(engine, claim, "default", 1)] == [job_id]
    finally:
        await engine.dispose()
