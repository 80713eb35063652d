"""cancel(job_id): a queued job never runs, a running one is stopped; both are dead-lettered."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.admin import cancel
from tests.helpers import TestDatabase, wait_until

started: list[str] = []
release_sync = threading.Event()


class Forever(Task, name="tests.cancel.forever"):
    async def run(self, ctx: JobContext) -> None:
        started.append("async")
        await asyncio.Event().wait()


class ForeverInThread(Task, name="tests.cancel.forever_in_thread"):
    def run(self, ctx: JobContext) -> None:
        started.append("sync")
        release_sync.wait(30)


class Later(Task, name="tests.cancel.later"):
    async def run(self, ctx: JobContext) -> None:
        started.append("later")


@pytest.fixture(autouse=True)
def _clear() -> None:
    started.clear()
    release_sync.clear()


async def commit(engine: AsyncEngine, *statements_or_jobs: Any) -> uuid.UUID | None:
    async with AsyncSession(engine) as session:
        job_id = None
        for item in statements_or_jobs:
            if isinstance(item, Job):
                session.add(item)
                job_id = item.id
            else:
                await session.execute(item)
        await session.commit()
    return job_id


async def dead_letters(engine: AsyncEngine) -> list[DeadLetterJob]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(DeadLetterJob))).all())


def worker_for(database: TestDatabase, heartbeat: timedelta) -> Worker:
    return Worker(
        database.url,
        tasks=[Forever, ForeverInThread, Later],
        poll_interval=timedelta(milliseconds=50),
        heartbeat_interval=heartbeat,
        heartbeat_timeout=heartbeat * 10,
        handle_signals=False,
    )


@pytest.fixture
async def running(database: TestDatabase) -> AsyncIterator[Worker]:
    # On PostgreSQL the heartbeat is slow, so only NOTIFY can deliver a cancellation quickly.
    heartbeat = timedelta(seconds=20 if database.dialect == "postgresql" else 0.1)
    worker = worker_for(database, heartbeat)
    task = asyncio.create_task(worker.run())
    yield worker
    release_sync.set()
    worker.stop(force=True)
    await asyncio.wait_for(task, timeout=15)


async def test_a_cancelled_queued_job_never_runs_and_is_dead_lettered(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job_id = await commit(engine, enqueue(Later(), delay=timedelta(hours=1)))
    assert job_id is not None
    await commit(engine, cancel(job_id, reason="customer left"))
    worker = worker_for(database, timedelta(milliseconds=100))
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _has_dead_letter(engine))
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    [dead] = await dead_letters(engine)
    assert dead.original_job_id == job_id
    assert dead.last_error_message == "cancelled: customer left"
    assert started == []


@pytest.mark.parametrize("task_class", [Forever, ForeverInThread], ids=["async", "sync"])
async def test_a_running_job_is_cancelled_and_dead_lettered(
    engine: AsyncEngine, running: Worker, task_class: type[Task]
) -> None:
    job_id = await commit(engine, enqueue(task_class()))
    assert job_id is not None
    await wait_until(lambda: _true(len(started) == 1))
    await commit(engine, cancel(job_id, reason="operator"))
    await wait_until(lambda: _has_dead_letter(engine), timeout=10)
    [dead] = await dead_letters(engine)
    assert dead.last_error_message == "cancelled: operator"
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(Job))).all() == []


async def test_cancelling_a_finished_job_changes_nothing(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        result = await session.execute(cancel(uuid.uuid4()))
        await session.commit()
    assert result.rowcount == 0  # type: ignore[attr-defined]  # a CursorResult


def test_a_reason_is_required() -> None:
    with pytest.raises(ValueError, match="reason"):
        cancel(uuid.uuid4(), reason="")


async def _has_dead_letter(engine: AsyncEngine) -> bool:
    return bool(await dead_letters(engine))


async def _true(value: bool) -> bool:
    return value
