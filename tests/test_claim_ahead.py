"""Claiming ahead: while runs are short, a worker claims up to `concurrency` jobs more than it
has free slots. Such a job waits locked under the lease, starts in claim order, and is never
lost, run twice, or kept past a shutdown, a cancel request or a lost lease."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.admin import cancel
from sqla_jobs.context import ClaimedJob
from sqla_jobs.models import WorkerRecord
from sqla_jobs.worker.ahead import SHORT_RUN, ClaimAhead
from tests.helpers import TestDatabase, add_jobs, wait_until

started: list[int] = []
gate = asyncio.Event()


class Gated(Task, name="tests.claim_ahead.gated"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        started.append(self.n)
        await gate.wait()


@pytest.fixture(autouse=True)
async def _clear() -> None:
    global gate
    started.clear()
    gate = asyncio.Event()  # made on this test's event loop


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """Run `worker` for the block; at its end, open the gate and stop the worker."""
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        gate.set()
        worker.stop()
        await asyncio.wait_for(task, timeout=15)


def make_worker(database: TestDatabase, *, concurrency: int, recent_run: float) -> Worker:
    worker = Worker(
        database.url,
        tasks=[Gated],
        concurrency=concurrency,
        poll_interval=timedelta(milliseconds=50),
        heartbeat_interval=timedelta(milliseconds=200),
        heartbeat_timeout=timedelta(seconds=20),
        handle_signals=False,
    )
    # As if the worker had just run jobs this long: claiming ahead depends on it.
    worker.runner.ahead.observe(recent_run)
    return worker


async def locked(engine: AsyncEngine) -> dict[uuid.UUID, str | None]:
    async with AsyncSession(engine) as session:
        rows = await session.execute(select(Job.id, Job.locked_by))
        return {job_id: locked_by for job_id, locked_by in rows if locked_by is not None}


async def jobs_left(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(Job))).all())


def condition(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


@pytest.fixture
async def four_gated(engine: AsyncEngine) -> list[uuid.UUID]:
    # Priorities make the claim order, and so the start order, known: 0 first.
    return await add_jobs(engine, *(enqueue(Gated(n=n), priority=10 - n) for n in range(4)))


async def test_short_runs_claim_ahead_and_the_waiting_jobs_start_in_claim_order(
    database: TestDatabase, engine: AsyncEngine, four_gated: list[uuid.UUID]
) -> None:
    worker = make_worker(database, concurrency=2, recent_run=0.0)
    async with running(worker):
        await wait_until(condition(lambda: started == [0, 1]))
        await wait_until(lambda: _count_is(locked(engine), 4))
        # The claim's rows are committed before its reply reaches the worker.
        await wait_until(condition(lambda: len(worker.runner.ahead) == 2))
        # The reconciliation counts waiting jobs as held: nothing is released.
        await worker.maintenance.reconcile()
        assert len(await locked(engine)) == 4
        gate.set()
        await wait_until(lambda: _count_is(jobs_left(engine), 0))
    assert started == [0, 1, 2, 3]
    assert worker.maintenance.released_strays == 0


async def test_long_runs_claim_for_free_slots_only(
    database: TestDatabase, engine: AsyncEngine, four_gated: list[uuid.UUID]
) -> None:
    worker = make_worker(database, concurrency=2, recent_run=SHORT_RUN * 2)
    async with running(worker):
        await wait_until(condition(lambda: started == [0, 1]))
        await asyncio.sleep(0.3)  # several poll intervals: a claim ahead would have happened
        assert len(await locked(engine)) == 2
        assert len(worker.runner.ahead) == 0


async def test_a_shutdown_releases_waiting_jobs_unstarted_and_another_worker_runs_them(
    database: TestDatabase, engine: AsyncEngine, four_gated: list[uuid.UUID]
) -> None:
    worker = make_worker(database, concurrency=2, recent_run=0.0)
    task = asyncio.create_task(worker.run())
    await wait_until(condition(lambda: started == [0, 1]))
    await wait_until(lambda: _count_is(locked(engine), 4))
    worker.stop()
    # The shutdown takes the waiting jobs back before the running ones end and free slots.
    await wait_until(condition(lambda: len(worker.runner.ahead) == 0))
    gate.set()
    await asyncio.wait_for(task, timeout=15)
    assert started == [0, 1]
    left = await jobs_left(engine)
    assert sorted(job.id for job in left) == sorted(four_gated[2:])
    assert all(job.locked_by is None and job.error_count == 0 for job in left)

    second = make_worker(database, concurrency=2, recent_run=0.0)
    await second.run_until_idle()
    assert started == [0, 1, 2, 3]


async def test_a_cancelled_waiting_job_is_released_unstarted_and_dead_lettered(
    database: TestDatabase, engine: AsyncEngine, four_gated: list[uuid.UUID]
) -> None:
    worker = make_worker(database, concurrency=2, recent_run=0.0)
    async with running(worker):
        await wait_until(lambda: _count_is(locked(engine), 4))
        async with AsyncSession(engine) as session:
            await session.execute(cancel(four_gated[3], reason="not wanted"))
            await session.commit()
        # The request reaches the worker by NOTIFY (PostgreSQL) or its heartbeat (both).
        await wait_until(lambda: _has_dead_letter(engine), timeout=15)
        gate.set()
        await wait_until(lambda: _count_is(jobs_left(engine), 0))
    assert sorted(started) == [0, 1, 2]
    async with AsyncSession(engine) as session:
        [dead] = (await session.scalars(select(DeadLetterJob))).all()
    assert dead.original_job_id == four_gated[3]
    assert dead.last_error_message == "cancelled: not wanted"


async def test_waiting_jobs_of_a_lost_lease_do_not_run_under_it(
    database: TestDatabase, engine: AsyncEngine, four_gated: list[uuid.UUID]
) -> None:
    worker = make_worker(database, concurrency=2, recent_run=0.0)
    async with running(worker):
        await wait_until(lambda: _count_is(locked(engine), 4))
        old = worker.lease.holder
        async with engine.begin() as connection:  # declared dead by another worker
            await connection.execute(update(Job).values(locked_by=None, locked_at=None))
            await connection.execute(WorkerRecord.__table__.delete())
        await wait_until(condition(lambda: worker.lease.holder != old))
        assert worker.runner.held_ids(old) == {four_gated[0], four_gated[1]}  # running only
        gate.set()
        await wait_until(lambda: _count_is(jobs_left(engine), 0), timeout=15)
    # Jobs 0 and 1 ran under the old lease and again under the new one (at least once); the
    # waiting ones ran once, under the new lease only.
    assert started.count(2) == 1
    assert started.count(3) == 1


def test_a_worker_with_slots_per_queue_never_claims_ahead(database: TestDatabase) -> None:
    worker = Worker(database.url, tasks=[Gated], queues={"a": 2, "b": 1}, handle_signals=False)
    worker.runner.ahead.observe(0.0)
    assert worker.runner.ahead.extra == 0


def _job(n: int) -> ClaimedJob:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return ClaimedJob(uuid.uuid4(), "t", "{}", "default", 0, moment, moment, "", n)


def test_no_extra_before_a_run_is_seen_nor_once_runs_are_long() -> None:
    ahead = ClaimAhead(limit=3)
    assert ahead.extra == 0  # a new worker knows nothing of its jobs yet
    ahead.observe(0.001)
    assert ahead.extra == 3
    for _ in range(40):
        ahead.observe(1.0)
    assert ahead.extra == 0
    for _ in range(60):
        ahead.observe(0.0)
    assert ahead.extra == 3


def test_waiting_jobs_leave_in_claim_order_and_by_owner() -> None:
    ahead = ClaimAhead(limit=4)
    first, second, third = _job(0), _job(1), _job(2)
    ahead.push(first, "old")
    ahead.push(second, "new")
    ahead.push(third, "old")
    assert ahead.ids("old") == {first.id, third.id}
    assert ahead.remove(uuid.uuid4()) is None
    assert ahead.take_all("old") == {"old": [first.id, third.id]}
    assert ahead.pop() == (second, "new")
    assert ahead.pop() is None
    ahead.push(first, "w")
    assert ahead.remove(first.id) == "w"
    assert len(ahead) == 0


async def _count_is(rows: Awaitable[Sized], expected: int) -> bool:
    return len(await rows) == expected


async def _has_dead_letter(engine: AsyncEngine) -> bool:
    async with AsyncSession(engine) as session:
        return bool((await session.scalars(select(DeadLetterJob))).all())


class _ClaimThenDo:
    """Wrap the store's claim: once a claim returns jobs, await `action` before its reply is
    handled, as if it happened while the claim was out."""

    def __init__(self, worker: Worker, action: Callable[[], Awaitable[None]]) -> None:
        self._claim = worker.store.claim
        self._action = action
        self.done = False

    async def __call__(self, **arguments: object) -> list[ClaimedJob]:
        jobs = await self._claim(**arguments)  # type: ignore[arg-type]
        if jobs and not self.done:
            self.done = True
            await self._action()
        return jobs


async def test_jobs_a_claim_returns_after_stop_are_released_unstarted(
    database: TestDatabase,
    engine: AsyncEngine,
    four_gated: list[uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More slots than jobs: the claim loop lets the claimed jobs start before it loops again.
    worker = make_worker(database, concurrency=8, recent_run=0.0)

    async def stop() -> None:
        worker.stop()

    late = _ClaimThenDo(worker, stop)
    monkeypatch.setattr(worker.store, "claim", late)
    await asyncio.wait_for(worker.run(), timeout=15)
    assert late.done
    assert started == []
    left = await jobs_left(engine)
    assert sorted(job.id for job in left) == sorted(four_gated)
    assert all(job.locked_by is None and job.error_count == 0 for job in left)


async def test_jobs_a_claim_returns_after_the_lease_was_lost_do_not_run_under_it(
    database: TestDatabase,
    engine: AsyncEngine,
    four_gated: list[uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = make_worker(database, concurrency=8, recent_run=0.0)
    lease = worker.lease

    async def lose_lease() -> None:
        # Declared dead and its jobs unlocked by another worker while the claim was out; the
        # lease thread's notice of the loss reaches the worker's loop only later.
        async with engine.begin() as connection:
            await connection.execute(update(Job).values(locked_by=None, locked_at=None))
            await connection.execute(WorkerRecord.__table__.delete())
        on_lost, lease.on_lost = lease.on_lost, None
        old = lease.holder
        lease._lose("declared dead meanwhile")
        lease.on_lost = on_lost
        assert on_lost is not None
        asyncio.get_running_loop().call_later(0.3, on_lost, old)

    late = _ClaimThenDo(worker, lose_lease)
    monkeypatch.setattr(worker.store, "claim", late)
    gate.set()  # the jobs run straight through
    async with running(worker):
        await wait_until(lambda: _count_is(jobs_left(engine), 0), timeout=15)
    assert late.done
    # Not run under the lost lease; claimed again and run under the new one: once each.
    assert sorted(started) == [0, 1, 2, 3]
