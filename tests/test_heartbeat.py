"""Heartbeats: live workers are known, dead ones' jobs are rescued long before the lock timeout."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import Engine, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.clock import db_now, db_now_plus
from sqla_jobs.models import WorkerRecord
from tests.helpers import TestDatabase, wait_until

ran: list[Any] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


class Quick(Task, name="tests.heartbeat.quick", backoff=lambda n: timedelta(0)):
    async def run(self, ctx: JobContext) -> None:
        ran.append(("quick", ctx.error_count))


class Fragile(Task, name="tests.heartbeat.fragile", max_retries=0):
    async def run(self, ctx: JobContext) -> None:
        ran.append("fragile")


class BlockLoop(Task, name="tests.heartbeat.block_loop"):
    """Block the event loop (a bug in an async job) and watch the heartbeat carry on."""

    async def run(self, ctx: JobContext) -> None:
        engine: Engine = ctx.state
        # On SQLite a write of the worker's own loop that is open when the loop blocks (its
        # first maintenance round's, say) keeps the database's one write lock until the loop
        # runs again, and no renewal can commit meanwhile: block once the start's writes are
        # done. The lease's own connection is what this test is about.
        await asyncio.sleep(0.5)
        with engine.connect() as connection:
            before = connection.scalar(select(WorkerRecord.heartbeat_at))
            time.sleep(1.5)  # blocking on purpose: the point of the test
            after = connection.scalar(select(WorkerRecord.heartbeat_at))
        ran.append((before, after))


FAST: dict[str, Any] = {
    "heartbeat_interval": timedelta(milliseconds=100),
    "heartbeat_timeout": timedelta(seconds=1),
    "poll_interval": timedelta(milliseconds=50),
    "handle_signals": False,
}


def make_worker(database: TestDatabase, **options: Any) -> Worker:
    return Worker(database.url, tasks=[Quick, Fragile, BlockLoop], **(FAST | options))


async def add_dead_worker_holding(engine: AsyncEngine, job: Job) -> None:
    """A worker that stopped beating a minute ago, still holding `job` under a fresh lock."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(WorkerRecord).values(
                id="dead-worker",
                hostname="gone",
                pid=1,
                queues=["default"],
                heartbeat_at=db_now_plus(-60),
            )
        )
    job.locked_by = "dead-worker"
    job.locked_at = db_now()  # a SQL expression the flush evaluates
    async with AsyncSession(engine) as session:
        session.add(job)
        await session.commit()


async def worker_rows(engine: AsyncEngine) -> list[WorkerRecord]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(WorkerRecord))).all())


async def test_a_running_worker_is_registered_and_beats(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    worker = make_worker(database)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _rows_are(engine, 1))
    [first] = await worker_rows(engine)
    assert (first.id, first.queues) == (worker.id, ["default"])

    async def beat_advanced() -> bool:
        [row] = await worker_rows(engine)
        return row.heartbeat_at > first.heartbeat_at

    await wait_until(beat_advanced)
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    assert await worker_rows(engine) == []


async def test_a_dead_workers_job_is_rescued_as_a_failed_attempt(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_dead_worker_holding(engine, enqueue(Quick()))
    # The lock is fresh: only the dead worker's silence frees it.
    worker = make_worker(database)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _true(ran == [("quick", 1)]))
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    assert worker.rescuer.rescued == 1
    assert [row.id for row in await worker_rows(engine)] == []


async def test_a_dead_workers_exhausted_job_is_dead_lettered(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_dead_worker_holding(engine, enqueue(Fragile()))
    worker = make_worker(database)
    task = asyncio.create_task(worker.run())

    async def dead_lettered() -> bool:
        async with AsyncSession(engine) as session:
            return (await session.scalars(select(DeadLetterJob))).first() is not None

    await wait_until(dead_lettered)
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    async with AsyncSession(engine) as session:
        [dead] = (await session.scalars(select(DeadLetterJob))).all()
        assert (await session.scalars(select(Job))).all() == []
    assert dead.last_error_message is not None
    assert dead.last_error_message.startswith("worker lost: dead-worker")
    assert ran == []


async def test_heartbeats_continue_while_a_job_blocks_the_event_loop(
    database: TestDatabase, engine: AsyncEngine, sync_engine: Engine
) -> None:
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="WARNING")
    logger.enable("sqla_jobs")
    try:
        async with AsyncSession(engine) as session:
            session.add(enqueue(BlockLoop()))
            await session.commit()
        worker = make_worker(database, state=sync_engine)
        await worker.run_until_idle()
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
    [(before, after)] = ran
    assert after > before
    assert worker.lease.max_loop_lag >= timedelta(seconds=1)
    assert any(r["message"].startswith("event loop blocked") for r in records)


async def _rows_are(engine: AsyncEngine, count: int) -> bool:
    return len(await worker_rows(engine)) == count


async def _true(value: bool) -> bool:
    return value
