"""`enqueue_many()`: bulk INSERT statements, one per chunk, run in the caller's transaction."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, Executable, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqla_jobs.clock import db_now_plus
from sqla_jobs.context import JobContext
from sqla_jobs.enqueue import enqueue_many
from sqla_jobs.errors import EnqueueError, PayloadError
from sqla_jobs.models import Job
from sqla_jobs.tasks import Task
from tests.helpers import TestDatabase


class Echo(Task, name="test_enqueue_many.echo", queue="echoes", priority=3):
    text: str
    number: int = 0

    async def run(self, ctx: JobContext) -> None:
        return None


class Ping(Task, name="test_enqueue_many.ping"):
    def run(self, ctx: JobContext) -> None:
        return None


class Unfinished(Task, name="test_enqueue_many.unfinished"):
    """A Task without `run`: an abstract base, which cannot be enqueued."""


def echoes(count: int) -> Iterator[Echo]:
    return (Echo(text=f"job {i}", number=i) for i in range(count))


def insert_all(engine: Engine, statements: Iterator[Executable]) -> int:
    """Execute every statement in one committed transaction; return how many there were."""
    executed = 0
    with Session(engine) as session:
        for statement in statements:
            session.execute(statement)
            executed += 1
        session.commit()
    return executed


def count_jobs(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_inserts_every_job_with_its_task_options(sync_engine: Engine) -> None:
    assert insert_all(sync_engine, enqueue_many([*echoes(40), Ping()])) == 1

    with Session(sync_engine) as session:
        jobs = session.scalars(select(Job)).all()
    assert len({job.id for job in jobs}) == 41
    by_number = {job.payload["number"]: job for job in jobs if job.name == "test_enqueue_many.echo"}
    assert sorted(by_number) == list(range(40))
    for number, job in by_number.items():
        assert job.payload == {"text": f"job {number}", "number": number}
        assert (job.queue, job.priority, job.context, job.error_count) == ("echoes", 3, "", 0)
        assert job.created_at is not None
        assert job.run_at is not None
        assert job.locked_by is None
    (ping,) = (job for job in jobs if job.name == "test_enqueue_many.ping")
    assert (ping.payload, ping.queue, ping.priority) == ({}, "default", 0)


async def test_statements_run_on_an_async_session(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        for statement in enqueue_many(echoes(25), chunk_size=10):
            await session.execute(statement)
        await session.commit()

    async with AsyncSession(engine) as session:
        payloads = (await session.scalars(select(Job.payload))).all()
    assert sorted(p["number"] for p in payloads) == list(range(25))


def test_per_call_options_override_every_task(sync_engine: Engine) -> None:
    run_at = datetime(2100, 1, 2, 3, 4, 5, tzinfo=UTC)
    statements = enqueue_many(
        [*echoes(5), Ping()], run_at=run_at, priority=-7, queue="bulk", context="import"
    )
    insert_all(sync_engine, statements)

    with Session(sync_engine) as session:
        rows = session.execute(select(Job.queue, Job.priority, Job.context, Job.run_at)).all()
    assert len(rows) == 6
    assert set(rows) == {("bulk", -7, "import", run_at)}


def test_delay_counts_from_the_database_clock(sync_engine: Engine) -> None:
    insert_all(sync_engine, enqueue_many(echoes(3), delay=timedelta(hours=1)))

    with Session(sync_engine) as session:
        in_about_an_hour = Job.run_at.between(db_now_plus(3600 - 60), db_now_plus(3600 + 60))
        assert session.scalar(select(func.count()).where(in_about_an_hour)) == 3


def test_rolled_back_transaction_leaves_no_job(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        for statement in enqueue_many(echoes(30), chunk_size=7):
            session.execute(statement)
        assert session.scalar(select(func.count()).select_from(Job)) == 30
        session.rollback()

    assert count_jobs(sync_engine) == 0


def test_empty_iterable_yields_no_statement() -> None:
    assert list(enqueue_many([])) == []
    assert list(enqueue_many(iter(()))) == []


def test_chunks_of_chunk_size_rows(sync_engine: Engine) -> None:
    statements = list(enqueue_many(echoes(2_500), chunk_size=1_000))

    assert len(statements) == 3
    insert_all(sync_engine, iter(statements))
    assert count_jobs(sync_engine) == 2_500


def test_tasks_are_read_one_chunk_at_a_time() -> None:
    read: list[int] = []

    def endless() -> Iterator[Echo]:
        for number in itertools.count():
            read.append(number)
            yield Echo(text="x", number=number)

    statements = enqueue_many(endless(), chunk_size=100)
    assert read == [], "nothing is read before the first statement is asked for"
    next(statements)
    assert len(read) == 100
    next(statements)
    assert len(read) == 200


@pytest.mark.parametrize(
    ("bad_task", "error", "message"),
    [
        pytest.param(Echo(text="nul \x00 inside"), PayloadError, "NUL", id="payload-with-nul"),
        pytest.param(Unfinished(), EnqueueError, "does not implement run()", id="no-run"),
        pytest.param("not a task", EnqueueError, "takes Tasks, not str", id="not-a-task"),
    ],
)
def test_bad_task_raises_before_its_chunk_executes(
    sync_engine: Engine, bad_task: object, error: type[EnqueueError], message: str
) -> None:
    tasks: list[object] = [*echoes(6), bad_task, *echoes(3)]
    statements = enqueue_many(tasks, chunk_size=4)  # type: ignore[arg-type]  # a wrong element

    with Session(sync_engine) as session:
        session.execute(next(statements))
        with pytest.raises(error, match=rf"^tasks\[6\]: .*{message}"):
            next(statements)
        # The first chunk (tasks 0-3) ran; nothing of the chunk holding the bad task did.
        assert session.scalar(select(func.count()).select_from(Job)) == 4
        session.rollback()
    assert count_jobs(sync_engine) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"queue": ""}, "queue must be", id="empty-queue"),
        pytest.param({"priority": 2**31}, "priority must be", id="priority-out-of-range"),
        pytest.param({"priority": True}, "priority must be", id="bool-priority"),
        pytest.param({"context": "a\x00b"}, "context must be", id="nul-in-context"),
        pytest.param({"run_at": datetime(2100, 1, 1)}, "timezone-aware", id="naive-run-at"),
        pytest.param({"delay": 5}, "delay must be a timedelta", id="delay-not-timedelta"),
        pytest.param(
            {"run_at": datetime.now(UTC), "delay": timedelta(seconds=1)},
            "run_at or delay, not both",
            id="run-at-and-delay",
        ),
        pytest.param({"chunk_size": 0}, "chunk_size must be", id="chunk-size-zero"),
    ],
)
def test_bad_options_raise_at_the_call(options: dict[str, object], message: str) -> None:
    never_read = (Echo(text=str(i)) for i in itertools.count())
    with pytest.raises(EnqueueError, match=message):
        enqueue_many(never_read, **options)  # type: ignore[arg-type]  # deliberately wrong types


def test_a_single_task_is_not_an_iterable_of_tasks() -> None:
    # A pydantic model iterates over its fields, which would otherwise fail confusingly.
    with pytest.raises(EnqueueError, match="use enqueue"):
        enqueue_many(Echo(text="one"))  # type: ignore[arg-type]  # the mistake under test


@pytest.mark.postgresql
@pytest.mark.timeout(60)
async def test_hundred_thousand_jobs_on_postgresql(pg_database: TestDatabase) -> None:
    total = 100_000
    engine = create_async_engine(pg_database.url)
    try:
        async with AsyncSession(engine) as session:
            statements = 0
            for statement in enqueue_many(Ping() for _ in range(total)):
                await session.execute(statement)
                statements += 1
            await session.commit()
        async with AsyncSession(engine) as session:
            count = await session.scalar(select(func.count(func.distinct(Job.id))))
    finally:
        await engine.dispose()
    assert statements == 100
    assert count == total
