"""Per-task timeouts: an async job is cancelled at its deadline, a late sync one fails."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import ConfigurationError, EnqueueError, Job, JobContext, Task, Worker, enqueue
from tests.helpers import TestDatabase

finished: list[str] = []


class Slow(Task, name="tests.timeout.slow", timeout=timedelta(milliseconds=100)):
    seconds: float

    async def run(self, ctx: JobContext) -> None:
        await asyncio.sleep(self.seconds)
        finished.append("slow")


class SlowInThread(Task, name="tests.timeout.slow_in_thread", timeout=timedelta(milliseconds=100)):
    seconds: float

    def run(self, ctx: JobContext) -> None:
        time.sleep(self.seconds)
        finished.append("thread")


class OwnTimeout(Task, name="tests.timeout.own"):
    async def run(self, ctx: JobContext) -> None:
        raise TimeoutError("the job's own")


@pytest.fixture(autouse=True)
def _clear() -> None:
    finished.clear()


async def run_one(database: TestDatabase, engine: AsyncEngine, job: Job) -> Job | None:
    async with AsyncSession(engine) as session:
        session.add(job)
        await session.commit()
    worker = Worker(database.url, tasks=[Slow, SlowInThread, OwnTimeout], handle_signals=False)
    await worker.run_until_idle()
    async with AsyncSession(engine) as session:
        return (await session.scalars(select(Job))).one_or_none()


async def test_an_async_job_is_cancelled_at_its_timeout(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job = await run_one(database, engine, enqueue(Slow(seconds=30)))
    assert job is not None
    assert job.error_count == 1
    assert job.last_error_message is not None
    assert "JobTimeoutError: cancelled at its timeout of 0.1 s" in job.last_error_message
    assert finished == []


async def test_a_job_within_its_timeout_completes(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    assert await run_one(database, engine, enqueue(Slow(seconds=0.01))) is None
    assert finished == ["slow"]


async def test_enqueue_overrides_the_task_timeout(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job = enqueue(Slow(seconds=0.3), timeout=timedelta(seconds=30))
    assert job.timeout_seconds == 30
    assert await run_one(database, engine, job) is None
    assert finished == ["slow"]


async def test_a_late_sync_job_runs_to_its_end_and_is_recorded_as_failed(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job = await run_one(database, engine, enqueue(SlowInThread(seconds=0.3)))
    assert job is not None
    assert job.error_count == 1
    assert job.last_error_message is not None
    assert "over its timeout of 0.1 s" in job.last_error_message
    assert finished == ["thread"]


async def test_a_jobs_own_timeout_error_is_an_ordinary_failure(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job = await run_one(database, engine, enqueue(OwnTimeout()))
    assert job is not None
    assert job.last_error_message is not None
    assert "TimeoutError: the job's own" in job.last_error_message
    assert "JobTimeoutError" not in job.last_error_message


def test_bad_timeouts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="timeout must be a positive timedelta"):

        class Bad(Task, name="tests.timeout.bad", timeout=timedelta(0)):
            async def run(self, ctx: JobContext) -> None:
                return None

    with pytest.raises(EnqueueError, match="timeout must be a positive timedelta"):
        enqueue(Slow(seconds=1), timeout=5)  # type: ignore[arg-type]  # the point of the test
