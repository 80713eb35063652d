"""The worker's scheduler on real databases: each slot of a schedule is enqueued exactly once."""

from __future__ import annotations

import asyncio
import itertools
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import Job, JobContext, Task, Worker
from sqla_jobs.clock import db_now_plus
from sqla_jobs.engine import create_engine
from sqla_jobs.models import PeriodicSlot
from sqla_jobs.periodic import CatchUp, Periodic, build_periodic
from sqla_jobs.store import JobStore
from sqla_jobs.worker.scheduler import Scheduler
from tests.cli_tasks import ledger, ledger_metadata
from tests.helpers import TestDatabase, wait_until
from tests.periodic_tasks import SCHEDULE, TASK
from tests.processes import WorkerProcess

ran: list[uuid.UUID] = []


class Beat(Task, name="tests.scheduler.beat"):
    async def run(self, ctx: JobContext) -> None:
        ran.append(ctx.job_id)


def every(period: timedelta, *, name: str = "tests.beat", catch_up: CatchUp = "one") -> Periodic:
    return build_periodic(
        Beat(), name=name, cron=None, every=period, timezone="UTC", catch_up=catch_up
    )


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[JobStore]:
    store = JobStore(create_engine(engine.url))
    yield store
    await store.dispose()


async def slots(engine: AsyncEngine) -> list[tuple[str, datetime, uuid.UUID]]:
    async with AsyncSession(engine) as session:
        rows = await session.execute(
            select(PeriodicSlot.schedule, PeriodicSlot.slot_at, PeriodicSlot.job_id).order_by(
                PeriodicSlot.slot_at
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]  # Row is a tuple


async def job_ids(engine: AsyncEngine) -> set[uuid.UUID]:
    async with AsyncSession(engine) as session:
        return set((await session.scalars(select(Job.id))).all())


async def test_a_slot_is_recorded_with_its_job_once(engine: AsyncEngine, store: JobStore) -> None:
    schedule = every(timedelta(minutes=1))
    slot_at = datetime.fromisoformat("2026-01-01T10:00:00+00:00")
    first, second = schedule.job_row(slot_at), schedule.job_row(slot_at)
    assert await store.enqueue_slot(schedule=schedule.name, slot_at=slot_at, row=first)
    assert not await store.enqueue_slot(schedule=schedule.name, slot_at=slot_at, row=second)
    assert await job_ids(engine) == {uuid.UUID(first.id)}
    assert await slots(engine) == [(schedule.name, slot_at, uuid.UUID(first.id))]
    async with AsyncSession(engine) as session:
        job = await session.get_one(Job, uuid.UUID(first.id))
    assert job.name == "tests.scheduler.beat"
    assert job.context == "periodic tests.beat at 2026-01-01T10:00:00+00:00"


async def test_a_slot_older_than_the_latest_recorded_is_refused(
    engine: AsyncEngine, store: JobStore
) -> None:
    schedule = every(timedelta(minutes=1))
    late = datetime.fromisoformat("2026-01-01T10:05:00+00:00")
    early = late - timedelta(minutes=3)
    assert await store.enqueue_slot(schedule="tests.beat", slot_at=late, row=schedule.job_row(late))
    assert not await store.enqueue_slot(
        schedule="tests.beat", slot_at=early, row=schedule.job_row(early)
    )
    assert await store.enqueue_slot(schedule="other", slot_at=early, row=schedule.job_row(early))
    assert len(await job_ids(engine)) == 2


async def test_pruning_keeps_recent_slots_and_each_schedules_latest(
    engine: AsyncEngine, store: JobStore
) -> None:
    schedule = every(timedelta(minutes=1))
    start = datetime.fromisoformat("2026-01-01T10:00:00+00:00")
    for name, minutes in [("a", 0), ("a", 1), ("a", 2), ("b", 0)]:
        slot_at = start + timedelta(minutes=minutes)
        assert await store.enqueue_slot(
            schedule=name, slot_at=slot_at, row=schedule.job_row(slot_at)
        )
    pruned = await store.prune_slots(schedules=["a", "b"], before=start + timedelta(minutes=5))
    assert pruned == 2
    assert [(name, at) for name, at, _ in await slots(engine)] == [
        ("b", start),
        ("a", start + timedelta(minutes=2)),
    ]


async def test_concurrent_workers_enqueue_a_slot_once(pg_database: TestDatabase) -> None:
    stores = [JobStore(create_engine(pg_database.url)) for _ in range(8)]
    schedule = every(timedelta(minutes=1))
    slot_at = datetime.fromisoformat("2026-01-01T10:00:00+00:00")
    try:
        for _ in range(5):
            results = await asyncio.gather(
                *(
                    s.enqueue_slot(
                        schedule=schedule.name, slot_at=slot_at, row=schedule.job_row(slot_at)
                    )
                    for s in stores
                )
            )
            assert results.count(True) == 1
            slot_at += timedelta(minutes=1)
        engine = create_async_engine(pg_database.url)
        assert len(await job_ids(engine)) == 5
        await engine.dispose()
    finally:
        for s in stores:
            await s.dispose()


async def record_slot(engine: AsyncEngine, name: str, ago: timedelta, period: timedelta) -> None:
    """Record a slot of `name` `ago` before the database's now, on the period's grid."""
    async with AsyncSession(engine) as session:
        then = await session.scalar(select(db_now_plus(-ago.total_seconds())))
        assert then is not None
        schedule = every(period, name=name)
        slot_at = schedule.latest_at_or_before(then)
        assert slot_at is not None
        await session.execute(
            insert(PeriodicSlot).values(schedule=name, slot_at=slot_at, job_id=uuid.uuid4())
        )
        await session.commit()


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    # Down for ten minutes of a one-minute schedule: the current slot is on time (under a
    # minute old) and always runs; before it, nine were missed.
    [("none", 1), ("one", 2), (timedelta(minutes=5), 5)],
    ids=["none", "one", "window"],
)
async def test_a_worker_starting_after_downtime_applies_the_catch_up_policy(
    engine: AsyncEngine, store: JobStore, catch_up: CatchUp, expected: int
) -> None:
    minute = timedelta(minutes=1)
    await record_slot(engine, "tests.beat", timedelta(minutes=10), minute)
    scheduler = Scheduler(store, schedules=[every(minute, catch_up=catch_up)], on_enqueued=_no_op)
    await scheduler.run_once()
    assert scheduler.enqueued == expected
    assert len(await job_ids(engine)) == expected
    await scheduler.run_once()
    assert len(await job_ids(engine)) == expected


async def test_a_new_schedule_starts_at_its_first_slot_after_the_worker_starts(
    engine: AsyncEngine, store: JobStore
) -> None:
    scheduler = Scheduler(store, schedules=[every(timedelta(hours=1))], on_enqueued=_no_op)
    pause = await scheduler.run_once()
    assert await job_ids(engine) == set()
    assert timedelta() < pause <= timedelta(seconds=30)


@pytest.fixture
def _clear_ran() -> Iterator[None]:
    ran.clear()
    yield
    ran.clear()


@pytest.mark.usefixtures("_clear_ran")
async def test_two_workers_in_one_process_enqueue_each_slot_once(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    schedule = every(timedelta(seconds=1), catch_up=timedelta(minutes=1))
    workers = [
        Worker(
            database.url,
            tasks=[Beat],
            periodic=[schedule],
            handle_signals=False,
            poll_interval=timedelta(milliseconds=50),
        )
        for _ in range(2)
    ]
    runs = [asyncio.create_task(worker.run()) for worker in workers]

    async def four_slots_ran() -> bool:
        recorded = await slots(engine)
        return len(recorded) >= 4 and {job for *_, job in recorded[:4]} <= set(ran)

    try:
        await wait_until(four_slots_ran, timeout=30, interval=0.1)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*runs)
    recorded = await slots(engine)
    left = await job_ids(engine)
    # Every job is a slot's, and ran once or is still waiting (enqueued just before the stop).
    assert sorted(ran) == sorted(set(ran))
    assert set(ran) | left == {job for *_, job in recorded}
    assert not set(ran) & left
    assert [b - a for (_, a, _), (_, b, _) in itertools.pairwise(recorded)] == [
        timedelta(seconds=1)
    ] * (len(recorded) - 1)
    assert sum(worker.scheduler.enqueued for worker in workers) == len(recorded)


class Spawn(Protocol):
    def __call__(self, *args: str) -> WorkerProcess: ...


@pytest.fixture
def spawn(pg_database: TestDatabase, tmp_path: Path) -> Iterator[Spawn]:
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(pg_database.url, log_path, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


async def test_three_worker_processes_enqueue_each_slot_of_a_one_second_schedule_once(
    pg_database: TestDatabase, spawn: Spawn
) -> None:
    engine = create_async_engine(pg_database.url)
    async with engine.begin() as connection:
        await connection.run_sync(ledger_metadata.create_all)
    workers = [spawn("--import", "tests.periodic_tasks") for _ in range(3)]

    async def five_seconds_of_slots() -> bool:
        return len(await slots(engine)) >= 6

    await wait_until(five_seconds_of_slots, timeout=60, interval=0.2)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [await w.exit_code() for w in workers] == [0, 0, 0], [w.output for w in workers]
    recorded = await slots(engine)
    assert {name for name, *_ in recorded} == {SCHEDULE}
    assert [b - a for (_, a, _), (_, b, _) in itertools.pairwise(recorded)] == [
        timedelta(seconds=1)
    ] * (len(recorded) - 1)
    async with AsyncSession(engine) as session:
        per_job: dict[str, int] = dict(
            (
                await session.execute(
                    select(ledger.c.key, func.count())
                    .where(ledger.c.event == "tick")
                    .group_by(ledger.c.key)
                )
            ).all()
        )
        left = set((await session.scalars(select(Job.id).where(Job.name == TASK))).all())
        jobs = await session.scalar(select(func.count()).select_from(Job))
    assert set(per_job.values()) == {1}
    ran = {uuid.UUID(key) for key in per_job}
    assert ran | left == {job for *_, job in recorded}
    assert not ran & left
    assert jobs == len(left)
    enqueuers = sum(w.output.count("periodic job enqueued") for w in workers)
    assert enqueuers == len(recorded)
    await engine.dispose()


def _no_op() -> None:
    return None
