"""The claim reads its index in order and stops after LIMIT rows, however large the backlog."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.sql.elements import ClauseElement

from sqla_jobs import JobContext, Task, Worker, enqueue_many
from sqla_jobs.dialects.postgresql import PostgreSQLStatements
from tests.helpers import TestDatabase, wait_until

BACKLOG = 100_000


@pytest.fixture
async def backlog_engine(pg_database: TestDatabase) -> AsyncEngine:
    engine = create_async_engine(pg_database.url)
    async with engine.begin() as connection:
        # A backlog enqueued over the last 100 s, all of it due.
        # Test data only: constant SQL, nothing formatted in.
        await connection.execute(
            text(
                "INSERT INTO sqla_jobs_job (id, name, payload, queue, priority, context, "
                "error_count, created_at, run_at) "
                "SELECT gen_random_uuid(), 'bench.noop', '{}'::jsonb, "
                "CASE WHEN n % 10 = 0 THEN 'other' ELSE 'default' END, n % 3, '', 0, "
                "now() - n * interval '1 millisecond', now() - n * interval '1 millisecond' "
                "FROM generate_series(1, :backlog) AS n"
            ),
            {"backlog": BACKLOG},
        )
    async with engine.begin() as connection:
        # Committed: statistics gathered in a rolled-back transaction are rolled back too.
        await connection.execute(text("ANALYZE sqla_jobs_job"))
    return engine


async def explain_claim(engine: AsyncEngine, queues: list[str]) -> str:
    return await explain(
        engine,
        PostgreSQLStatements().claim_jobs(worker_id="w", queues=queues, limit=100),
    )


async def explain(engine: AsyncEngine, statement: ClauseElement) -> str:
    # EXPLAIN takes no bind parameters for the statement it explains, so the statement is
    # rendered with its (test-chosen, constant) values inlined.
    sql = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    async with engine.connect() as connection:
        rows = (await connection.execute(text(f"EXPLAIN {sql}"))).scalars().all()
    return "\n".join(rows)


async def test_the_claim_uses_its_index_without_scanning_or_sorting_the_backlog(
    backlog_engine: AsyncEngine,
) -> None:
    try:
        plan = await explain_claim(backlog_engine, ["default"])
    finally:
        await backlog_engine.dispose()
    assert "Index Scan using ix_sqla_jobs_job_claim" in plan, plan
    assert "Seq Scan on sqla_jobs_job" not in plan, plan
    assert "Sort" not in plan, plan
    assert "Limit" in plan, plan
    assert "LockRows" in plan, plan


async def test_the_heartbeats_search_for_cancelled_jobs_reads_only_the_cancelled(
    backlog_engine: AsyncEngine,
) -> None:
    try:
        plan = await explain(
            backlog_engine, PostgreSQLStatements().cancelled_queued_jobs(limit=100)
        )
    finally:
        await backlog_engine.dispose()
    assert "ix_sqla_jobs_job_cancel_requested" in plan, plan
    assert "Seq Scan on sqla_jobs_job" not in plan, plan


class Backlog(Task, name="tests.claim_plan.backlog", queue="backlog"):
    async def run(self, ctx: JobContext) -> None:
        return None


async def test_a_worker_refreshes_statistics_the_job_table_outgrew(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url)
    try:
        # A bulk load into a table analyzed while empty: the planner would sort the backlog.
        async with AsyncSession(engine) as session:
            for statement in enqueue_many(Backlog() for _ in range(20_000)):
                await session.execute(statement)
            await session.commit()
        worker = Worker(
            pg_database.url,
            tasks=[Backlog],
            queues=["elsewhere"],  # serve nothing: only the heartbeat touches the backlog
            heartbeat_interval=timedelta(milliseconds=100),
            heartbeat_timeout=timedelta(seconds=2),
            handle_signals=False,
        )
        running = asyncio.create_task(worker.run())

        async def analyzed() -> bool:
            async with engine.connect() as connection:
                tuples = await connection.scalar(
                    text("SELECT reltuples FROM pg_class WHERE oid = 'sqla_jobs_job'::regclass")
                )
            return bool(tuples and tuples >= 10_000)

        await wait_until(analyzed, timeout=20)
        worker.stop()
        await asyncio.wait_for(running, timeout=10)
        plan = await explain_claim(engine, ["backlog"])
    finally:
        await engine.dispose()
    assert "Index Scan using ix_sqla_jobs_job_claim" in plan, plan
    assert "Sort" not in plan, plan
