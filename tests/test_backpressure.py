"""A worker whose deletes of finished jobs fall behind stops claiming until they catch up.

Without that, a slow database (or a bad plan) let a worker hold ever more finished jobs, in
memory and locked in the table: 387 000 of them in a 1 000 000-job drain, each delete slower.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqla_jobs import Job, JobContext, Task, Worker, enqueue_many
from sqla_jobs.worker.recorder import BEHIND_BATCHES
from tests.helpers import TestDatabase

JOBS = 5_000
CONCURRENCY = 50
BATCH = 200  # the recorder's default batch


class Quick(Task, name="tests.backpressure.quick"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        return None


# Every DELETE statement on the job table takes 0.2 s: the deletes fall behind the claims.
SLOW_DELETES = (
    """
    CREATE FUNCTION tests_slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$
    """,
    """
    CREATE TRIGGER tests_slow_delete BEFORE DELETE ON sqla_jobs_job
    FOR EACH STATEMENT EXECUTE FUNCTION tests_slow_delete()
    """,
)


async def held(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).select_from(Job).where(Job.locked_by.is_not(None))
        )
        return int(count or 0)


async def test_claims_pause_while_the_deletes_are_behind(pg_database: TestDatabase) -> None:
    engine = create_async_engine(pg_database.url)
    try:
        async with engine.begin() as connection:
            for statement in SLOW_DELETES:
                await connection.execute(text(statement))
            for insert in enqueue_many(Quick(n=n) for n in range(JOBS)):
                await connection.execute(insert)
        worker = Worker(
            engine,
            tasks=[Quick],
            concurrency=CONCURRENCY,
            # Long: only the recorder's call when the deletes catch up resumes the claims.
            poll_interval=timedelta(seconds=60),
            handle_signals=False,
        )
        most = 0
        draining = asyncio.create_task(worker.run_until_idle())
        async with asyncio.timeout(45):
            while not draining.done():
                most = max(most, await held(engine))
                await asyncio.sleep(0.01)
        assert await draining == JOBS
        assert await held(engine) == 0
    finally:
        await engine.dispose()
    # Waiting deletes, a batch being deleted, and the jobs running or claimed ahead; without
    # the pause the worker held nearly all 5 000 at once.
    bound = BATCH * BEHIND_BATCHES + BATCH + 2 * CONCURRENCY
    assert most <= bound, most
