"""admin.retry_dead_letters / delete_dead_letters / cancel_jobs / enqueue_by_name."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import Job, JobContext, Task
from sqla_jobs.admin import (
    JobState,
    cancel_jobs,
    count_dead_letters,
    delete_dead_letters,
    enqueue_by_name,
    get_job,
    retry_dead_letters,
)
from sqla_jobs.errors import EnqueueError, PayloadError, UnknownTaskError
from sqla_jobs.models import DeadLetterJob
from tests.admin_rows import add_dead_letter, add_job
from tests.helpers import TestDatabase


class Greet(Task, name="tests.admin.greet", queue="greetings"):
    who: str
    times: int = 1

    async def run(self, ctx: JobContext) -> None: ...


async def count(engine: AsyncEngine, model: type[Job] | type[DeadLetterJob]) -> int:
    async with AsyncSession(engine) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_retry_moves_dead_letters_back_in_committed_batches(engine: AsyncEngine) -> None:
    ids = [await add_dead_letter(engine, failed_ago=1000 - n) for n in range(7)]
    await add_dead_letter(engine, queue="elsewhere")
    batches: list[int] = []
    async with AsyncSession(engine) as session:
        retried = await retry_dead_letters(
            session, queue="admin", batch_size=3, on_batch=batches.append
        )
    assert (retried, batches) == (7, [3, 3, 1])
    async with AsyncSession(engine) as session:
        assert set(await session.scalars(select(Job.id))) == set(ids)
    assert await count(engine, DeadLetterJob) == 1


async def test_retry_stops_at_its_limit_and_by_id(engine: AsyncEngine) -> None:
    ids = [await add_dead_letter(engine, failed_ago=1000 - n) for n in range(5)]
    async with AsyncSession(engine) as session:
        assert await retry_dead_letters(session, limit=2, batch_size=10) == 2
        assert await retry_dead_letters(session, [ids[4], uuid.uuid4()]) == 1
        assert await retry_dead_letters(session, [uuid.uuid4()]) == 0
        assert await retry_dead_letters(session, [], queue="admin") == 0
    async with AsyncSession(engine) as session:
        assert set(await session.scalars(select(Job.id))) == {ids[0], ids[1], ids[4]}


async def test_a_unique_job_whose_key_is_taken_again_stays_dead(engine: AsyncEngine) -> None:
    await add_job(engine, unique_key="k1", name="tests.admin.job")
    stuck = await add_dead_letter(engine, unique_key="k1")
    freed = await add_dead_letter(engine, unique_key="k2")
    async with AsyncSession(engine) as session:
        assert await retry_dead_letters(session, batch_size=1) == 1
        assert await count_dead_letters(session) == 1
        detail = await get_job(session, stuck)
        assert detail is not None
        assert detail.state is JobState.DEAD
        assert (await get_job(session, freed)) is not None


async def test_concurrent_retries_of_the_same_dead_letters_move_each_once(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url, pool_size=4)
    try:
        ids = {await add_dead_letter(engine, failed_ago=1000 - n) for n in range(30)}

        async def retry_all() -> int:
            async with AsyncSession(engine) as session:
                return await retry_dead_letters(session, ids, batch_size=4)

        moved = await asyncio.gather(*(retry_all() for _ in range(4)))
        assert sum(moved) == 30
        async with AsyncSession(engine) as session:
            assert set(await session.scalars(select(Job.id))) == ids
        assert await count(engine, DeadLetterJob) == 0
    finally:
        await engine.dispose()


async def test_delete_purges_only_old_dead_letters_in_batches(engine: AsyncEngine) -> None:
    for n in range(5):
        await add_dead_letter(engine, failed_ago=8 * 86400 + n)
    recent = await add_dead_letter(engine, failed_ago=60)
    batches: list[int] = []
    async with AsyncSession(engine) as session:
        deleted = await delete_dead_letters(
            session, older_than=timedelta(days=7), batch_size=2, on_batch=batches.append
        )
        assert (deleted, batches) == (5, [2, 2, 1])
        assert await delete_dead_letters(session, older_than=timedelta(days=7)) == 0
        assert (await get_job(session, recent)) is not None


async def test_cancel_jobs_counts_the_jobs_still_there(engine: AsyncEngine) -> None:
    waiting = await add_job(engine)
    running = await add_job(engine, locked_by="w1")
    async with AsyncSession(engine) as session:
        assert await cancel_jobs(session, [waiting, running, waiting, uuid.uuid4()]) == 2
        await session.commit()
        assert await cancel_jobs(session, []) == 0
        detail = await get_job(session, waiting)
        assert detail is not None
        assert (detail.state, detail.cancel_reason) == (JobState.CANCELLED, "cancelled by request")
        with pytest.raises(ValueError, match="reason must be a non-empty string"):
            await cancel_jobs(session, [waiting], reason="")


async def test_cancel_jobs_is_undone_by_a_rollback(engine: AsyncEngine) -> None:
    waiting = await add_job(engine)
    async with AsyncSession(engine) as session:
        assert await cancel_jobs(session, [waiting], reason="oops") == 1
        await session.rollback()
        detail = await get_job(session, waiting)
    assert detail is not None
    assert detail.state is JobState.DUE


async def test_enqueue_by_name_validates_the_payload_against_the_task(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        job = await enqueue_by_name(session, "tests.admin.greet", '{"who": "ada"}', priority=3)
        job_id = job.id
        await session.commit()
        detail = await get_job(session, job_id)
    assert detail is not None
    assert (detail.queue, detail.priority, detail.payload) == (
        "greetings",
        3,
        {"who": "ada", "times": 1},
    )


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ('{"who": ', PayloadError, "the payload is not valid JSON"),
        ("[1, 2]", PayloadError, "the payload must be a JSON object, not list"),
        ({"times": "many"}, PayloadError, "invalid payload for task 'tests.admin.greet': who:"),
    ],
)
async def test_enqueue_by_name_refuses_a_bad_payload_in_one_sentence(
    engine: AsyncEngine, payload: object, error: type[Exception], message: str
) -> None:
    async with AsyncSession(engine) as session:
        with pytest.raises(error, match=message):
            await enqueue_by_name(session, "tests.admin.greet", payload)  # type: ignore[arg-type]  # bad input on purpose
        assert not session.new


async def test_enqueue_by_name_names_an_unknown_task_and_bad_options(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        with pytest.raises(UnknownTaskError, match=r"'tests\.admin\.nobody'"):
            await enqueue_by_name(session, "tests.admin.nobody", {})
        with pytest.raises(EnqueueError, match="queue"):
            await enqueue_by_name(session, "tests.admin.greet", {"who": "x"}, queue="")


async def test_a_concurrent_retry_and_purge_each_take_a_dead_letter_at_most_once(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url, pool_size=4)
    try:
        for n in range(40):
            await add_dead_letter(engine, failed_ago=1000 - n)

        async def retry() -> int:
            async with AsyncSession(engine) as session:
                return await retry_dead_letters(session, batch_size=3)

        async def purge() -> int:
            async with AsyncSession(engine) as session:
                return await delete_dead_letters(session, batch_size=3)

        retried, deleted = await asyncio.gather(retry(), purge())
        assert retried + deleted == 40
        assert await count(engine, Job) == retried
        assert await count(engine, DeadLetterJob) == 0
    finally:
        await engine.dispose()


async def test_a_huge_payload_survives_a_retry(engine: AsyncEngine) -> None:
    payload = {"blob": "é" * 1_000_000}
    dead = await add_dead_letter(engine, payload=payload)
    async with AsyncSession(engine) as session:
        assert await retry_dead_letters(session, [dead]) == 1
        detail = await get_job(session, dead)
    assert detail is not None
    assert (detail.state, detail.payload) == (JobState.DUE, payload)
