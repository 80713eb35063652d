"""`enqueue_bulk()`: COPY on PostgreSQL (asyncpg, psycopg), INSERT statements on SQLite."""

from __future__ import annotations

import asyncio
import itertools
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, assert_type

import asyncpg
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqla_jobs import EnqueueError, Job, JobContext, PayloadError, Task, enqueue, enqueue_bulk
from sqla_jobs.dialects.postgresql import CHANNEL
from tests.helpers import TestDatabase


class Echo(Task, name="tests.enqueue_bulk.echo", queue="echoes", priority=3):
    text: str
    number: int = 0
    extra: Any = None

    async def run(self, ctx: JobContext) -> None:
        return None


class Unfinished(Task, name="tests.enqueue_bulk.unfinished"):
    """A Task without `run`: an abstract base, which cannot be enqueued."""


def echoes(count: int) -> Iterator[Echo]:
    return (Echo(text=f"job {i}", number=i) for i in range(count))


TRICKY = {
    "quotes": 'it\'s "quoted" `back` \\ \t tab \n newline',
    "copy": "\\N \\. \r\n|,;",
    "unicode": "naïve 𝄞 😀 中文 \u2028",
    "numbers": [0, -1, 2**53, 2**70, 1.5, -0.25, 1e-7],
    "nested": {"null": None, "bool": True, "empty": {}, "list": []},
}


async def count_jobs(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(Job))) or 0


def count_jobs_sync(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


async def test_inserts_every_job_and_returns_the_count(engine: AsyncEngine) -> None:
    tasks = [*echoes(1_234), Echo(text="tricky", number=-1, extra=TRICKY)]
    async with AsyncSession(engine) as session:
        inserted = await enqueue_bulk(session, tasks, chunk_size=500, context="import")
        assert_type(inserted, int)
        await session.commit()
    assert inserted == 1_235

    async with AsyncSession(engine) as session:
        jobs = (await session.scalars(select(Job))).all()
    assert len({job.id for job in jobs}) == 1_235
    by_number = {job.payload["number"]: job for job in jobs}
    assert sorted(by_number) == list(range(-1, 1_234))
    assert by_number[-1].payload == {"text": "tricky", "number": -1, "extra": TRICKY}
    for number, job in by_number.items():
        if number >= 0:
            assert job.payload == {"text": f"job {number}", "number": number, "extra": None}
        assert (job.name, job.queue, job.priority, job.context) == (
            "tests.enqueue_bulk.echo",
            "echoes",
            3,
            "import",
        )
        assert (job.error_count, job.locked_by, job.timeout_seconds) == (0, None, None)
        # No run_at, no delay: due at the database's now, as enqueue() makes them.
        assert job.run_at == job.created_at


def test_a_sync_session_takes_a_plain_call(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        inserted = enqueue_bulk(session, [*echoes(700), Echo(text="t", extra=TRICKY)])
        assert_type(inserted, int)
        session.commit()
    assert inserted == 701
    with Session(sync_engine) as session:
        payloads = session.scalars(select(Job.payload)).all()
    assert sorted(p["number"] for p in payloads) == [0, 0, *range(1, 700)]
    assert {"text": "t", "number": 0, "extra": TRICKY} in payloads


async def test_per_call_options_override_every_task(engine: AsyncEngine) -> None:
    run_at = datetime(2100, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    async with AsyncSession(engine) as session:
        await enqueue_bulk(
            session,
            echoes(5),
            run_at=run_at,
            priority=-7,
            queue="bulk",
            context="why",
            timeout=timedelta(seconds=90),
        )
        await session.commit()
    async with AsyncSession(engine) as session:
        rows = (
            await session.execute(
                select(Job.queue, Job.priority, Job.context, Job.run_at, Job.timeout_seconds)
            )
        ).all()
    assert len(rows) == 5
    assert set(rows) == {("bulk", -7, "why", run_at, 90.0)}


async def test_delay_counts_from_the_database_clock(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        await enqueue_bulk(session, echoes(3), delay=timedelta(hours=1))
        await session.commit()
    async with AsyncSession(engine) as session:
        jobs = (await session.scalars(select(Job))).all()
    assert len(jobs) == 3
    for job in jobs:
        assert abs((job.run_at - job.created_at) - timedelta(hours=1)) < timedelta(seconds=5)


async def test_rolled_back_transaction_leaves_no_job(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        assert await enqueue_bulk(session, echoes(2_500), chunk_size=1_000) == 2_500
        assert await session.scalar(select(func.count()).select_from(Job)) == 2_500
        await session.rollback()
    assert await count_jobs(engine) == 0


def test_rolled_back_sync_transaction_leaves_no_job(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        assert enqueue_bulk(session, echoes(1_500), chunk_size=1_000) == 1_500
        assert session.scalar(select(func.count()).select_from(Job)) == 1_500
        session.rollback()
    assert count_jobs_sync(sync_engine) == 0


async def test_jobs_and_business_writes_commit_or_roll_back_together(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add(enqueue(Echo(text="one by one")))
        await session.flush()
        await enqueue_bulk(session, echoes(10))
        await session.rollback()
    assert await count_jobs(engine) == 0

    async with AsyncSession(engine) as session:
        session.add(enqueue(Echo(text="one by one")))
        await enqueue_bulk(session, echoes(10))
        await session.commit()
    assert await count_jobs(engine) == 11


@pytest.mark.parametrize(
    ("bad_task", "error", "message"),
    [
        pytest.param(Echo(text="nul \x00 inside"), PayloadError, "NUL", id="payload-with-nul"),
        pytest.param(Echo(text="x", extra=float("nan")), PayloadError, "extra is nan", id="nan"),
        pytest.param(Unfinished(), EnqueueError, "does not implement run()", id="no-run"),
        pytest.param("not a task", EnqueueError, "takes Tasks, not str", id="not-a-task"),
    ],
)
async def test_a_bad_task_raises_naming_its_index_and_writes_nothing(
    engine: AsyncEngine, bad_task: object, error: type[EnqueueError], message: str
) -> None:
    tasks: list[object] = [*echoes(6), bad_task, *echoes(3)]
    async with AsyncSession(engine) as session:
        with pytest.raises(error, match=rf"^tasks\[6\]: .*{message}"):
            await enqueue_bulk(session, tasks)  # type: ignore[arg-type]  # a wrong element
        # Nothing reached the database, and the caller's transaction is still usable.
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        session.add(enqueue(Echo(text="after")))
        await session.commit()
    assert await count_jobs(engine) == 1


def test_a_bad_task_in_a_sync_session_writes_nothing(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        with pytest.raises(PayloadError, match=r"^tasks\[2\]: .*value is inf"):
            enqueue_bulk(session, [*echoes(2), Echo(text="x", extra={"value": float("inf")})])
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        session.commit()
    assert count_jobs_sync(sync_engine) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"queue": "a b"}, "queue must contain no whitespace", id="queue-space"),
        pytest.param({"priority": 2**31}, "priority must be", id="priority-out-of-range"),
        pytest.param({"run_at": datetime(2100, 1, 1)}, "timezone-aware", id="naive-run-at"),
        pytest.param({"delay": 5}, "delay must be a timedelta", id="delay-not-timedelta"),
        pytest.param({"chunk_size": 0}, "chunk_size must be", id="chunk-size-zero"),
    ],
)
def test_bad_options_raise_at_the_call_before_any_io(options: dict[str, Any], message: str) -> None:
    never_read = (Echo(text=str(i)) for i in itertools.count())
    # Not even a session is needed: the options are checked before it is used.
    with pytest.raises(EnqueueError, match=message):
        enqueue_bulk(Session(), never_read, **options)


def test_a_single_task_or_a_non_session_is_refused() -> None:
    with pytest.raises(EnqueueError, match="use enqueue"):
        enqueue_bulk(Session(), Echo(text="one"))  # type: ignore[arg-type]  # the mistake
    with pytest.raises(EnqueueError, match="takes a Session or an AsyncSession, not str"):
        enqueue_bulk("session", [Echo(text="one")])  # type: ignore[call-overload]  # ditto


@pytest.mark.timeout(120)
def test_memory_stays_bounded_whatever_the_count(sync_engine: Engine) -> None:
    """100 000 jobs of 200-character payloads, about 40 MiB as rows, stream in 1 000-row chunks."""
    total = 100_000
    with Session(sync_engine) as session:
        session.execute(select(func.count()).select_from(Job))  # connect outside the measure
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            inserted = enqueue_bulk(
                session, (Echo(text="x" * 200, number=i) for i in range(total)), chunk_size=1_000
            )
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        session.commit()
    assert inserted == total
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert count_jobs_sync(sync_engine) == total


@pytest.mark.postgresql
@pytest.mark.timeout(90)
async def test_hundred_thousand_jobs_on_postgresql(pg_database: TestDatabase) -> None:
    total = 100_000
    engine = create_async_engine(pg_database.url)
    try:
        async with AsyncSession(engine) as session:
            inserted = await enqueue_bulk(session, (Echo(text="x", number=i) for i in range(total)))
            await session.commit()
        async with AsyncSession(engine) as session:
            count = await session.scalar(select(func.count(func.distinct(Job.id))))
            numbers = await session.scalar(select(func.count(func.distinct(Job.payload["number"]))))
    finally:
        await engine.dispose()
    assert inserted == count == numbers == total


@pytest.mark.postgresql
async def test_psycopg_async_driver_copies_too(pg_database: TestDatabase) -> None:
    url = make_url(pg_database.sync_url).set(drivername="postgresql+psycopg")
    engine = create_async_engine(url)
    try:
        async with AsyncSession(engine) as session:
            assert await enqueue_bulk(session, echoes(300), chunk_size=100) == 300
            await session.rollback()
        async with AsyncSession(engine) as session:
            assert await enqueue_bulk(session, [Echo(text="t", extra=TRICKY)]) == 1
            await session.commit()
        async with AsyncSession(engine) as session:
            payloads = (await session.scalars(select(Job.payload))).all()
    finally:
        await engine.dispose()
    assert payloads == [{"text": "t", "number": 0, "extra": TRICKY}]


@pytest.fixture
async def notifications(pg_database: TestDatabase) -> AsyncIterator[asyncio.Queue[str]]:
    url = make_url(pg_database.url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    received: asyncio.Queue[str] = asyncio.Queue()
    await connection.add_listener(CHANNEL, lambda *args: received.put_nowait(args[3]))
    yield received
    await connection.close()


@pytest.mark.postgresql
async def test_copy_notifies_listeners_at_commit_and_never_for_a_rollback(
    pg_database: TestDatabase, notifications: asyncio.Queue[str]
) -> None:
    engine = create_async_engine(pg_database.url)
    try:
        async with AsyncSession(engine) as session:
            await enqueue_bulk(session, echoes(10), queue="rolled-back")
            await session.rollback()
        async with AsyncSession(engine) as session:
            await enqueue_bulk(session, echoes(3_000), queue="bulk", chunk_size=1_000)
            assert notifications.empty(), "nothing is sent before the commit"
            await session.commit()
        async with AsyncSession(engine) as session:
            session.add(enqueue(Echo(text="end"), queue="sentinel"))
            await session.commit()
    finally:
        await engine.dispose()
    # Notifications arrive in commit order: everything before the sentinel has arrived with it.
    received = [await asyncio.wait_for(notifications.get(), timeout=5)]
    while received[-1] != "sentinel":
        received.append(await asyncio.wait_for(notifications.get(), timeout=5))
    assert received == ["bulk", "sentinel"]
