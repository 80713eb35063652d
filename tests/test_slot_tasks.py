"""A slot's task runs waiting jobs one after the other (a task per job cost more than a short
job): no job may see what an earlier one set in its context, wait behind a job that awaits
while a slot is free, or run beside more than `concurrency` others."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.admin import cancel
from sqla_jobs.context import ClaimedJob
from tests.helpers import TestDatabase, add_jobs, wait_until

tenant: contextvars.ContextVar[int] = contextvars.ContextVar("tenant")
seen: dict[int, int | None] = {}
tasks_of: dict[int, asyncio.Task[object] | None] = {}
running_now: list[int] = []
most_at_once = 0
gate = asyncio.Event()


class SetsContext(Task, name="tests.slot_tasks.sets_context"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        seen[self.n] = tenant.get(None)
        tasks_of[self.n] = asyncio.current_task()
        tenant.set(self.n)  # never reset: as careless as a job may be


class Quick(Task, name="tests.slot_tasks.quick"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        seen[self.n] = None


class Blocks(Task, name="tests.slot_tasks.blocks"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        seen[self.n] = None
        await gate.wait()


class Overlaps(Task, name="tests.slot_tasks.overlaps"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        global most_at_once
        running_now.append(self.n)
        most_at_once = max(most_at_once, len(running_now))
        await asyncio.sleep(0.005)
        running_now.remove(self.n)


@pytest.fixture(autouse=True)
def _clear() -> None:
    global gate, most_at_once
    seen.clear()
    tasks_of.clear()
    running_now.clear()
    most_at_once = 0
    gate = asyncio.Event()  # made on this test's event loop


def make_worker(database: TestDatabase, concurrency: int, *, short_runs: bool = True) -> Worker:
    worker = Worker(
        database.url,
        tasks=[SetsContext, Quick, Blocks, Overlaps],
        concurrency=concurrency,
        poll_interval=timedelta(milliseconds=50),
        handle_signals=False,
    )
    # As if recent runs were short (jobs are claimed ahead) or long (claimed for free slots).
    worker.runner.ahead.observe(0.0 if short_runs else 1.0)
    return worker


async def jobs_left(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def test_a_job_never_sees_context_variables_an_earlier_job_set(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_jobs(engine, *(enqueue(SetsContext(n=n), priority=-n) for n in range(20)))
    worker = make_worker(database, concurrency=4)
    assert await worker.run_until_idle() == 20
    assert seen == dict.fromkeys(range(20))
    # Each job that changed the context left its task: no task ran two of these jobs.
    assert len({id(task) for task in tasks_of.values()}) == 20


async def test_a_slot_task_runs_waiting_jobs_one_after_another(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_jobs(engine, *(enqueue(Quick(n=n)) for n in range(200)))
    worker = make_worker(database, concurrency=10)
    made = 0
    create_task = asyncio.get_running_loop().create_task

    def counting(*args: object, **kwargs: object) -> asyncio.Task[object]:
        nonlocal made
        made += 1
        return create_task(*args, **kwargs)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    loop.create_task = counting  # type: ignore[method-assign, assignment]
    try:
        assert await worker.run_until_idle() == 200
    finally:
        del loop.create_task
    assert len(seen) == 200
    # The worker's own tasks are a handful; a task per job would be 200 more.
    assert made < 100


async def test_a_job_that_awaits_leaves_the_waiting_jobs_to_another_task(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_jobs(engine, enqueue(Blocks(n=0), priority=1))
    await add_jobs(engine, *(enqueue(Quick(n=n)) for n in range(1, 30)))
    # No claim ahead: the first claim takes the blocking job and one more, and the next claim
    # waits for that one to start; the blocked job's task must hand it on.
    worker = make_worker(database, concurrency=2, short_runs=False)
    task = asyncio.create_task(worker.run())
    try:
        # Every quick job runs in the one slot the blocked job leaves free.
        await wait_until(lambda: _is(jobs_left(engine), 1))
        assert sorted(seen) == list(range(30))
    finally:
        gate.set()
        worker.stop()
        await asyncio.wait_for(task, timeout=15)
    assert await jobs_left(engine) == 0


async def test_no_more_than_concurrency_jobs_run_at_once(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add_jobs(engine, *(enqueue(Overlaps(n=n)) for n in range(60)))
    worker = make_worker(database, concurrency=3)
    assert await worker.run_until_idle() == 60
    assert most_at_once == 3


async def test_cancelling_a_job_of_a_slot_task_leaves_the_jobs_after_it_to_run(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [blocked] = await add_jobs(engine, enqueue(Blocks(n=0), priority=1))
    await add_jobs(engine, *(enqueue(Quick(n=n)) for n in range(1, 6)))
    worker = make_worker(database, concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _is_true(0 in seen))
        async with AsyncSession(engine) as session:
            await session.execute(cancel(blocked, reason="not wanted"))
            await session.commit()
        await wait_until(lambda: _is(jobs_left(engine), 0), timeout=15)
    finally:
        gate.set()
        worker.stop()
        await asyncio.wait_for(task, timeout=15)
    assert sorted(seen) == list(range(6))
    async with AsyncSession(engine) as session:
        dead = (await session.scalars(select(DeadLetterJob))).all()
    assert [job.original_job_id for job in dead] == [blocked]


async def _is(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def _is_true(value: bool) -> bool:
    return value


async def test_jobs_not_started_yet_take_their_queues_slots(database: TestDatabase) -> None:
    worker = Worker(database.url, tasks=[Quick], queues={"a": 2, "b": 1}, handle_signals=False)
    moment = datetime(2026, 11, 30, tzinfo=UTC)
    for n in range(2):
        name = Quick.__task_options__.name
        job = ClaimedJob(uuid.uuid4(), name, "{}", "a", 0, moment, moment, "", n)
        worker.runner.start(job, "w1")
    # No task has started them yet (nothing awaited): a claim now must not see queue a free.
    assert worker.runner.free_slots_by_queue() == {"a": 0, "b": 1}
    worker.runner.stop_starting()  # the spare task then ends without starting them
    await asyncio.sleep(0)
    assert worker.runner.free_slots_by_queue() == {"a": 2, "b": 1}
