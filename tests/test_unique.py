"""enqueue_unique(): one job per key while its row exists, race-free through the unique index."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from typing import Any, cast

import pytest
from pydantic import Field
from sqlalchemy import CursorResult, Engine, create_engine, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqla_jobs import DeadLetterJob, EnqueueError, Job, JobContext, Task, Worker, enqueue_unique
from sqla_jobs.store import JobStore
from sqla_jobs.unique import MAX_KEY_BYTES, payload_key
from tests.helpers import TestDatabase, wait_until

ran: list[str] = []


class Report(Task, name="tests.unique.report", queue="reports", priority=2):
    day: str
    options: dict[str, Any] = Field(default_factory=dict)

    async def run(self, ctx: JobContext) -> None:
        ran.append(self.day)


class OtherReport(Task, name="tests.unique.other_report"):
    day: str

    async def run(self, ctx: JobContext) -> None:
        return None


async def insert(engine: AsyncEngine, task: Task, **options: Any) -> int:
    """Enqueue `task` uniquely in a transaction of its own; return the rowcount."""
    async with AsyncSession(engine) as session:
        result = await session.execute(enqueue_unique(task, **options))
        await session.commit()
    return cast(CursorResult[Any], result).rowcount


async def rows(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(select(Job).order_by(Job.created_at)))


async def test_an_equal_job_is_inserted_once(engine: AsyncEngine) -> None:
    assert await insert(engine, Report(day="mon"), context="nightly") == 1
    assert await insert(engine, Report(day="mon")) == 0
    assert await insert(engine, Report(day="tue")) == 1

    mon, tue = await rows(engine)
    assert (mon.name, mon.payload, mon.queue, mon.priority) == (
        "tests.unique.report",
        {"day": "mon", "options": {}},
        "reports",
        2,
    )
    assert (mon.context, mon.error_count, mon.run_at) == ("nightly", 0, mon.created_at)
    assert mon.unique_key == payload_key({"day": "mon", "options": {}})
    assert tue.unique_key != mon.unique_key


def test_a_sync_session_gets_the_same_statement(sync_engine: Engine) -> None:
    statement = enqueue_unique(Report(day="mon"))
    with Session(sync_engine) as session:
        first = cast(CursorResult[Any], session.execute(statement))
        second = cast(CursorResult[Any], session.execute(enqueue_unique(Report(day="mon"))))
        session.commit()
        assert (first.rowcount, second.rowcount) == (1, 0)
        assert session.scalars(select(Job.id)).all() == [statement.job_id]


def test_the_default_key_is_the_hash_of_the_canonical_payload() -> None:
    # Field order inside the payload does not change the key; any value does.
    a = payload_key({"day": "mon", "options": {"x": 1, "y": "é"}})
    assert a == payload_key({"options": {"y": "é", "x": 1}, "day": "mon"})
    assert a != payload_key({"day": "mon", "options": {"x": 2, "y": "é"}})
    assert len(a) == 64


async def test_a_given_key_replaces_the_payload_and_is_per_task(engine: AsyncEngine) -> None:
    assert await insert(engine, Report(day="mon"), key="weekly") == 1
    assert await insert(engine, Report(day="tue"), key="weekly") == 0
    assert await insert(engine, OtherReport(day="mon"), key="weekly") == 1
    assert [job.unique_key for job in await rows(engine)] == ["weekly", "weekly"]


async def test_unique_for_holds_the_key_within_one_period_of_the_database_clock(
    engine: AsyncEngine,
) -> None:
    assert await insert(engine, Report(day="mon"), unique_for=timedelta(days=1)) == 1
    assert await insert(engine, Report(day="mon"), unique_for=timedelta(days=1)) == 0
    # Without unique_for, the key is another one.
    assert await insert(engine, Report(day="mon")) == 1
    keys = [job.unique_key or "" for job in await rows(engine)]
    key, bucket = keys[0].split("@")
    assert key == keys[1] == payload_key({"day": "mon", "options": {}})
    assert int(bucket) % 86_400 == 0


async def test_a_new_period_admits_a_new_job(engine: AsyncEngine) -> None:
    assert await insert(engine, Report(day="mon"), unique_for=timedelta(seconds=1)) == 1

    async def admitted() -> bool:
        return await insert(engine, Report(day="mon"), unique_for=timedelta(seconds=1)) == 1

    await wait_until(admitted, timeout=5)
    first, second = await rows(engine)
    assert first.unique_key != second.unique_key


async def test_a_rolled_back_transaction_takes_no_key(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        await session.execute(enqueue_unique(Report(day="mon")))
        await session.rollback()
    assert await insert(engine, Report(day="mon")) == 1


async def test_a_running_or_retrying_job_holds_its_key(engine: AsyncEngine) -> None:
    await insert(engine, Report(day="mon"))
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(locked_by="w1"))
    assert await insert(engine, Report(day="mon")) == 0
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(locked_by=None, error_count=3))
    assert await insert(engine, Report(day="mon"), delay=timedelta(hours=1)) == 0


async def test_a_completed_job_frees_its_key(database: TestDatabase, engine: AsyncEngine) -> None:
    ran.clear()
    await insert(engine, Report(day="mon"))
    worker = Worker(database.url, tasks=[Report], queues=["reports"], handle_signals=False)
    assert await worker.run_until_idle() == 1
    assert ran == ["mon"]
    assert await insert(engine, Report(day="mon")) == 1


async def test_a_dead_lettered_job_frees_its_key_and_the_dead_letter_keeps_it(
    engine: AsyncEngine,
) -> None:
    await insert(engine, Report(day="mon"), key="k")
    [job] = await rows(engine)
    assert await JobStore(engine).dead_letter_unowned(job_id=job.id, error="gave up")

    assert await insert(engine, Report(day="mon"), key="k") == 1
    async with AsyncSession(engine) as session:
        [dead] = (await session.scalars(select(DeadLetterJob))).all()
    assert (dead.original_job_id, dead.unique_key) == (job.id, "k")


async def test_jobs_without_a_key_never_conflict(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        for _ in range(3):
            session.add(Job(name="tests.unique.report", payload={"day": "mon"}))
        await session.commit()
    assert await insert(engine, Report(day="mon")) == 1
    assert len(await rows(engine)) == 4


async def test_enqueue_unique_takes_enqueues_options(engine: AsyncEngine) -> None:
    assert (
        await insert(
            engine,
            Report(day="mon"),
            queue="other",
            priority=-1,
            timeout=timedelta(seconds=30),
            delay=timedelta(hours=1),
        )
        == 1
    )
    [job] = await rows(engine)
    assert (job.queue, job.priority, job.timeout_seconds) == ("other", -1, 30.0)
    assert job.run_at > job.created_at + timedelta(minutes=59)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": ""}, "key must be a non-empty string"),
        ({"key": 3}, "key must be a non-empty string"),
        ({"key": "a\x00b"}, "NUL"),
        ({"key": "\ud800"}, "valid Unicode"),
        ({"key": "é" * MAX_KEY_BYTES}, "over the limit"),
        ({"unique_for": timedelta(0)}, "at least 1 second"),
        ({"unique_for": 60}, "at least 1 second"),
        ({"unique_for": timedelta(seconds=1.5)}, "whole number of seconds"),
        ({"priority": "high"}, "priority"),
        ({"run_at": "now"}, "run_at"),
    ],
)
def test_bad_options_raise_at_the_call(options: dict[str, Any], message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        enqueue_unique(Report(day="mon"), **options)


def test_enqueue_unique_takes_a_task() -> None:
    with pytest.raises(EnqueueError, match="takes a Task instance"):
        enqueue_unique({"day": "mon"})  # type: ignore[arg-type]  # the mistake under test


async def test_concurrent_transactions_on_postgresql_leave_exactly_one_job(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url, pool_size=8)
    try:
        started = asyncio.Barrier(8)

        async def enqueue_in_own_transaction() -> int:
            async with AsyncSession(engine) as session:
                # Each holds an open transaction on a connection of its own before any inserts.
                await session.execute(select(1))
                await started.wait()
                result = await session.execute(enqueue_unique(Report(day="mon")))
                await session.commit()
            return cast(CursorResult[Any], result).rowcount

        counts = await asyncio.gather(*(enqueue_in_own_transaction() for _ in range(8)))
        assert sorted(counts) == [0] * 7 + [1]
        assert len(await rows(engine)) == 1
    finally:
        await engine.dispose()


def test_concurrent_threads_on_sqlite_leave_exactly_one_job(
    sqlite_database: TestDatabase,
) -> None:
    engine = create_engine(sqlite_database.sync_url, connect_args={"timeout": 30})
    started = threading.Barrier(8)
    counts: list[int] = []
    errors: list[BaseException] = []

    def enqueue_in_own_transaction() -> None:
        try:
            with Session(engine) as session:
                started.wait()
                result = session.execute(enqueue_unique(Report(day="mon")))
                session.commit()
                counts.append(cast(CursorResult[Any], result).rowcount)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_in_own_transaction) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert sorted(counts) == [0] * 7 + [1]
        with Session(engine) as session:
            assert len(session.scalars(select(Job.id)).all()) == 1
    finally:
        engine.dispose()


async def test_the_claim_still_runs_unique_and_plain_jobs(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    ran.clear()
    await insert(engine, Report(day="mon"))
    async with AsyncSession(engine) as session:
        session.add(
            Job(
                id=uuid.uuid4(), name="tests.unique.report", payload={"day": "tue"}, queue="reports"
            )
        )
        await session.commit()
    worker = Worker(database.url, tasks=[Report], queues=["reports"], handle_signals=False)
    assert await worker.run_until_idle() == 2
    assert sorted(ran) == ["mon", "tue"]
    async with engine.begin() as connection:
        await connection.execute(delete(Job))
