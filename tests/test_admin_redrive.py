"""redrive(): dead letters back into the queue as fresh jobs, in the caller's transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import CursorResult, Engine, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue_unique
from sqla_jobs.admin import redrive
from sqla_jobs.clock import db_now_plus
from sqla_jobs.unique import payload_key
from tests.helpers import TestDatabase

ran: list[int] = []


class Redriven(Task, name="tests.redrive.job", queue="redrive"):
    n: int

    async def run(self, ctx: JobContext) -> None:
        ran.append(self.n)


async def add_dead_letter(
    engine: AsyncEngine,
    *,
    n: int = 1,
    name: str = "tests.redrive.job",
    queue: str = "redrive",
    failed_ago: float = 60.0,
    unique_key: str | None = None,
) -> uuid.UUID:
    """Insert a dead letter of a job that failed `failed_ago` seconds ago."""
    dead_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(DeadLetterJob).values(
                id=dead_id,
                original_job_id=uuid.uuid4(),
                name=name,
                payload={"n": n},
                queue=queue,
                priority=5,
                context="signup",
                error_count=21,
                last_error_message="it failed",
                created_at=db_now_plus(-failed_ago - 100),
                failed_at=db_now_plus(-failed_ago),
                unique_key=unique_key,
            )
        )
    return dead_id


async def run_redrive(engine: AsyncEngine, **options: Any) -> int:
    """Run `redrive(**options)` in one transaction; return how many were redriven."""
    async with AsyncSession(engine) as session:
        statements = redrive(**options)
        await session.execute(statements.insert)
        result = await session.execute(statements.delete)
        await session.commit()
    return cast(CursorResult[Any], result).rowcount


async def jobs(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(select(Job).order_by(Job.created_at, Job.id)))


async def dead_ids(engine: AsyncEngine) -> set[uuid.UUID]:
    async with AsyncSession(engine) as session:
        return set(await session.scalars(select(DeadLetterJob.id)))


async def test_a_dead_letter_comes_back_as_a_fresh_job(engine: AsyncEngine) -> None:
    dead_id = await add_dead_letter(engine, n=7)
    other = await add_dead_letter(engine, n=8)

    assert await run_redrive(engine, ids=[dead_id]) == 1

    [job] = await jobs(engine)
    assert job.id == dead_id
    assert (job.name, job.payload, job.queue, job.priority, job.context) == (
        "tests.redrive.job",
        {"n": 7},
        "redrive",
        5,
        "signup",
    )
    assert (job.error_count, job.snooze_count, job.last_error_message, job.locked_by) == (
        0,
        0,
        None,
        None,
    )
    assert job.run_at == job.created_at
    assert await dead_ids(engine) == {other}


async def test_a_redriven_job_runs(database: TestDatabase, engine: AsyncEngine) -> None:
    ran.clear()
    await add_dead_letter(engine, n=3)
    assert await run_redrive(engine) == 1
    worker = Worker(database.url, tasks=[Redriven], queues=["redrive"], handle_signals=False)
    assert await worker.run_until_idle() == 1
    assert ran == [3]
    assert await jobs(engine) == []


async def test_filters_choose_the_dead_letters(engine: AsyncEngine) -> None:
    old = await add_dead_letter(engine, failed_ago=7200)
    recent = await add_dead_letter(engine, failed_ago=60)
    other_queue = await add_dead_letter(engine, queue="elsewhere")
    other_name = await add_dead_letter(engine, name="tests.redrive.other")
    async with engine.connect() as connection:
        now = await connection.scalar(select(db_now_plus(0)))
    assert now is not None

    assert await run_redrive(engine, queue="redrive", failed_before=now - timedelta(hours=1)) == 1
    assert await dead_ids(engine) == {recent, other_queue, other_name}
    assert (
        await run_redrive(
            engine, name="tests.redrive.job", queue="redrive", failed_after=now - timedelta(hours=1)
        )
        == 1
    )
    assert await dead_ids(engine) == {other_queue, other_name}
    assert await run_redrive(engine, queue="elsewhere", name="tests.redrive.other") == 0
    assert {job.id for job in await jobs(engine)} == {old, recent}


async def test_batches_take_the_oldest_failures_first(engine: AsyncEngine) -> None:
    ids = [await add_dead_letter(engine, n=n, failed_ago=1000 - n) for n in range(5)]

    assert await run_redrive(engine, batch_size=2) == 2
    assert await dead_ids(engine) == set(ids[2:])
    assert await run_redrive(engine, batch_size=2) == 2
    assert await run_redrive(engine, batch_size=2) == 1
    assert await run_redrive(engine, batch_size=2) == 0
    assert {job.id for job in await jobs(engine)} == set(ids)


async def test_a_taken_unique_key_leaves_the_dead_letter_and_the_transaction_usable(
    engine: AsyncEngine,
) -> None:
    taken = await add_dead_letter(engine, n=1, unique_key="k", failed_ago=300)
    free = await add_dead_letter(engine, n=2, unique_key="free", failed_ago=200)
    async with AsyncSession(engine) as session:
        await session.execute(enqueue_unique(Redriven(n=1), key="k"))
        statements = redrive()
        await session.execute(statements.insert)
        redriven = cast(CursorResult[Any], await session.execute(statements.delete)).rowcount
        # The transaction was not aborted: it goes on and commits.
        await session.execute(enqueue_unique(Redriven(n=9)))
        await session.commit()

    assert redriven == 1
    assert await dead_ids(engine) == {taken}
    by_key = {job.unique_key: job.id for job in await jobs(engine)}
    assert set(by_key) == {"free", "k", payload_key({"n": 9})}
    assert by_key["free"] == free


async def test_two_dead_letters_of_one_key_redrive_one_job(engine: AsyncEngine) -> None:
    # Neither key is taken when the batch is read; the second insert conflicts with the first.
    first = await add_dead_letter(engine, n=1, unique_key="k", failed_ago=300)
    second = await add_dead_letter(engine, n=2, unique_key="k", failed_ago=200)

    assert await run_redrive(engine) == 1

    [job] = await jobs(engine)
    assert (job.id, job.unique_key) == (first, "k")
    assert await dead_ids(engine) == {second}


def test_redrive_runs_on_a_sync_session(database: TestDatabase, sync_engine: Engine) -> None:
    dead_id = uuid.uuid4()
    with Session(sync_engine) as session:
        session.add(
            DeadLetterJob(
                id=dead_id,
                original_job_id=uuid.uuid4(),
                name="tests.redrive.job",
                payload={"n": 1},
                queue="redrive",
                priority=0,
                context="",
                error_count=1,
                created_at=session.scalar(select(db_now_plus(0))),
            )
        )
        session.commit()
        insert_, delete_ = redrive([dead_id])
        session.execute(insert_)
        assert cast(CursorResult[Any], session.execute(delete_)).rowcount == 1
        session.commit()
        assert session.scalars(select(Job.id)).all() == [dead_id]


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_a_bad_batch_size_raises(batch_size: Any) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        redrive(batch_size=batch_size)


async def test_concurrent_redrives_on_postgresql_move_each_dead_letter_once(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url, pool_size=4)
    try:
        ids = {await add_dead_letter(engine, n=n, failed_ago=1000 - n) for n in range(20)}
        started = asyncio.Barrier(4)

        async def redrive_in_own_transaction() -> int:
            async with AsyncSession(engine) as session:
                await session.execute(select(1))
                await started.wait()
                statements = redrive(batch_size=10)
                await session.execute(statements.insert)
                result = await session.execute(statements.delete)
                await session.commit()
            return cast(CursorResult[Any], result).rowcount

        moved = await asyncio.gather(*(redrive_in_own_transaction() for _ in range(4)))
        # Locked dead letters are skipped, so the four share them out, each at most once.
        assert sum(moved) == 20
        assert {job.id for job in await jobs(engine)} == ids
        assert await dead_ids(engine) == set()
    finally:
        await engine.dispose()
