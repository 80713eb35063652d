"""`ctx.transaction()`: a job's writes and its completion commit together, or not at all."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.clock import db_now
from sqla_jobs.errors import LockLostError, TransactionUsageError
from tests.helpers import TestDatabase

app_metadata = MetaData()
app_rows = Table(
    "test_app_row",
    app_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False),
)


def _insert(key: str) -> Any:
    return insert(app_rows).values(key=key)


def _steal(job_id: uuid.UUID) -> Any:
    """Give the job to another worker, as a lock timeout or a rescue would."""
    return update(Job).where(Job.id == job_id).values(locked_by="thief")


lost: list[LockLostError] = []
"""The `LockLostError`s the jobs saw; cleared before each test."""


@pytest.fixture(autouse=True)
def _clear_lost() -> None:
    lost.clear()


class Write(Task, name="tests.transaction.write"):
    """Insert an app row in the completing transaction; optionally misbehave around it."""

    key: str
    steal: bool = False
    fail_inside: bool = False
    fail_after: bool = False

    async def run(self, ctx: JobContext) -> None:
        try:
            async with ctx.transaction() as session:
                if self.steal:
                    # Before the session's first write: on SQLite that write locks the file.
                    engine: AsyncEngine = ctx.state
                    async with engine.begin() as connection:
                        await connection.execute(_steal(ctx.job_id))
                await session.execute(_insert(self.key))
                if self.fail_inside:
                    raise RuntimeError("failing inside the transaction")
        except LockLostError as exc:
            lost.append(exc)
            raise
        if self.fail_after:
            raise RuntimeError("failing after the commit")


class SyncWrite(Task, name="tests.transaction.sync_write"):
    """The same as `Write`, in a plain `def run` (a thread, a sync Session)."""

    key: str
    steal: bool = False
    fail_inside: bool = False
    fail_after: bool = False

    def run(self, ctx: JobContext) -> None:
        try:
            with ctx.transaction() as session:
                if self.steal:
                    sync_url: str = ctx.state
                    thief = create_engine(sync_url)
                    try:
                        with thief.begin() as connection:
                            connection.execute(_steal(ctx.job_id))
                    finally:
                        thief.dispose()
                session.execute(_insert(self.key))
                if self.fail_inside:
                    raise RuntimeError("failing inside the transaction")
        except LockLostError as exc:
            lost.append(exc)
            raise
        if self.fail_after:
            raise RuntimeError("failing after the commit")


class Twice(Task, name="tests.transaction.twice"):
    """Commit, then try to commit again: the job is already complete."""

    async def run(self, ctx: JobContext) -> None:
        async with ctx.transaction() as session:
            await session.execute(_insert("first"))
        async with ctx.transaction() as session:
            await session.execute(_insert("second"))


class Nested(Task, name="tests.transaction.nested"):
    """Open a transaction inside another: refused, and the outer one rolls back."""

    async def run(self, ctx: JobContext) -> None:
        async with ctx.transaction() as session:
            await session.execute(_insert("outer"))
            async with ctx.transaction():
                pass


class AgainAfterRollback(Task, name="tests.transaction.again_after_rollback"):
    """A rolled-back transaction may be followed by another one, which completes the job."""

    async def run(self, ctx: JobContext) -> None:
        try:
            async with ctx.transaction() as session:
                await session.execute(_insert("rolled back"))
                raise ValueError("first try")
        except ValueError:
            pass
        assert not ctx.is_completed
        async with ctx.transaction() as session:
            await session.execute(_insert("kept"))
        assert ctx.is_completed


class BlockingWith(Task, name="tests.transaction.blocking_with"):
    """A sync `with` in an async run would block the event loop: refused."""

    async def run(self, ctx: JobContext) -> None:
        with ctx.transaction():
            pass


class AsyncWithInThread(Task, name="tests.transaction.async_with_in_thread"):
    """`async with` on a loop of the job's own, in a sync run: refused."""

    def run(self, ctx: JobContext) -> None:
        async def attempt() -> None:
            async with ctx.transaction():
                pass

        asyncio.run(attempt())


TASKS = [Write, SyncWrite, Twice, Nested, AgainAfterRollback, BlockingWith, AsyncWithInThread]


@pytest.fixture
async def app_engine(engine: AsyncEngine) -> AsyncEngine:
    """The test's engine, with the application's table created."""
    async with engine.begin() as connection:
        await connection.run_sync(app_metadata.create_all)
    return engine


def make_worker(database: TestDatabase, **options: Any) -> Worker:
    # The stealing tasks reach the database through `state`: the async engine is per test.
    options.setdefault("tasks", TASKS)
    options.setdefault("handle_signals", False)
    return Worker(database.url, **options)


async def add(engine: AsyncEngine, *jobs: Job) -> list[uuid.UUID]:
    ids = [job.id for job in jobs]
    async with AsyncSession(engine) as session:
        session.add_all(jobs)
        await session.commit()
    return ids


async def jobs_in_table(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(Job))).all())


async def dead_letters(engine: AsyncEngine) -> list[DeadLetterJob]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(DeadLetterJob))).all())


async def make_due(engine: AsyncEngine, job_id: uuid.UUID) -> None:
    """Make a retried job due now, instead of waiting out its backoff."""
    async with engine.begin() as connection:
        await connection.execute(update(Job).where(Job.id == job_id).values(run_at=db_now()))


async def app_keys(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.scalars(select(app_rows.c.key).order_by("id"))).all())


def write_task(kind: str, key: str, **options: bool) -> Task:
    return Write(key=key, **options) if kind == "async" else SyncWrite(key=key, **options)


def state_for(kind: str, database: TestDatabase, engine: AsyncEngine) -> Any:
    return engine if kind == "async" else database.sync_url


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    """The kind of `run`: ``async def`` (AsyncSession) or plain ``def`` (Session, thread)."""
    result: str = request.param
    return result


async def test_the_jobs_writes_and_its_completion_commit_together(
    database: TestDatabase, app_engine: AsyncEngine, kind: str
) -> None:
    await add(app_engine, enqueue(write_task(kind, "a")), enqueue(write_task(kind, "b")))
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    logger.enable("sqla_jobs")
    try:
        assert await make_worker(database).run_until_idle() == 2
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
    assert sorted(await app_keys(app_engine)) == ["a", "b"]
    assert await jobs_in_table(app_engine) == []
    # Completed by the job's transaction, not again by the batched delete.
    assert not any("lock lost" in r["message"] for r in records)
    completed = [r for r in records if r["message"] == "job completed"]
    assert [r["extra"].get("in_transaction") for r in completed] == [True, True]


async def test_a_lost_lock_keeps_none_of_the_jobs_writes(
    database: TestDatabase, app_engine: AsyncEngine, kind: str
) -> None:
    [job_id] = await add(app_engine, enqueue(write_task(kind, "stolen", steal=True)))
    state = state_for(kind, database, app_engine)
    await make_worker(database, state=state).run_until_idle()
    assert await app_keys(app_engine) == []
    [job] = await jobs_in_table(app_engine)
    assert job.id == job_id
    # The thief's claim stands; the failure could not be recorded over it either.
    assert (job.locked_by, job.error_count) == ("thief", 0)
    assert await dead_letters(app_engine) == []
    [error] = lost
    assert "no longer holds the job" in str(error)


async def test_an_exception_inside_the_block_rolls_back_and_the_job_is_retried(
    database: TestDatabase, app_engine: AsyncEngine, kind: str
) -> None:
    [job_id] = await add(app_engine, enqueue(write_task(kind, "x", fail_inside=True)))
    await make_worker(database).run_until_idle()
    assert await app_keys(app_engine) == []
    [job] = await jobs_in_table(app_engine)
    assert (job.id, job.error_count, job.locked_by) == (job_id, 1, None)
    assert job.last_error_message is not None
    assert "failing inside the transaction" in job.last_error_message


async def test_an_exception_after_the_commit_is_logged_and_not_retried(
    database: TestDatabase, app_engine: AsyncEngine, kind: str
) -> None:
    await add(app_engine, enqueue(write_task(kind, "done", fail_after=True)))
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    logger.enable("sqla_jobs")
    try:
        await make_worker(database).run_until_idle()
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
    assert await app_keys(app_engine) == ["done"]
    assert await jobs_in_table(app_engine) == []
    assert await dead_letters(app_engine) == []
    [logged] = [r for r in records if "after its transaction completed it" in r["message"]]
    assert logged["level"].name == "ERROR"
    assert "failing after the commit" in logged["extra"]["error"]
    assert not any("lock lost" in r["message"] for r in records)


async def test_a_second_transaction_after_the_commit_is_refused(
    database: TestDatabase, app_engine: AsyncEngine
) -> None:
    await add(app_engine, enqueue(Twice()))
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    logger.enable("sqla_jobs")
    try:
        await make_worker(database).run_until_idle()
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
    # The first commit completed the job; the second block never opened a transaction.
    assert await app_keys(app_engine) == ["first"]
    assert await jobs_in_table(app_engine) == []
    [logged] = [r for r in records if "after its transaction completed it" in r["message"]]
    assert "TransactionUsageError" in logged["extra"]["error"]
    assert "already completed this job" in logged["extra"]["error"]


async def test_nested_transactions_are_refused(
    database: TestDatabase, app_engine: AsyncEngine
) -> None:
    await add(app_engine, enqueue(Nested()))
    await make_worker(database).run_until_idle()
    assert await app_keys(app_engine) == []
    [job] = await jobs_in_table(app_engine)
    assert job.last_error_message is not None
    assert "TransactionUsageError: ctx.transaction() blocks cannot be nested" in (
        job.last_error_message
    )


async def test_a_rolled_back_transaction_may_be_followed_by_another(
    database: TestDatabase, app_engine: AsyncEngine
) -> None:
    await add(app_engine, enqueue(AgainAfterRollback()))
    await make_worker(database).run_until_idle()
    assert await app_keys(app_engine) == ["kept"]
    assert await jobs_in_table(app_engine) == []


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (BlockingWith(), "would block the event loop"),
        (AsyncWithInThread(), "works only in the job's own `async def run`"),
    ],
    ids=["with-in-async-run", "async-with-in-sync-run"],
)
async def test_the_wrong_with_for_the_run_is_a_clear_error(
    database: TestDatabase, app_engine: AsyncEngine, task: Task, message: str
) -> None:
    await add(app_engine, enqueue(task))
    await make_worker(database).run_until_idle()
    [job] = await jobs_in_table(app_engine)
    assert job.error_count == 1
    assert job.last_error_message is not None
    assert "TransactionUsageError" in job.last_error_message
    assert message in job.last_error_message


def test_a_context_without_a_worker_has_no_transaction() -> None:
    now = datetime.now(UTC)
    ctx = JobContext(
        job_id=uuid.uuid4(),
        name="n",
        queue="q",
        priority=0,
        error_count=0,
        context="",
        created_at=now,
        run_at=now,
        worker_id="w",
        state=None,
    )
    assert not ctx.is_completed
    with pytest.raises(TransactionUsageError, match="needs a job run by a Worker"):
        ctx.transaction()


async def test_a_retried_transactional_job_writes_once(
    database: TestDatabase, app_engine: AsyncEngine, kind: str
) -> None:
    # The first attempt fails inside its block, the second completes: one row, not two.
    [job_id] = await add(app_engine, enqueue(write_task(kind, "once", fail_inside=True)))
    worker = make_worker(database)
    await worker.run_until_idle()
    async with app_engine.begin() as connection:
        await connection.execute(
            update(Job).where(Job.id == job_id).values(payload={"key": "once"})
        )
    await make_due(app_engine, job_id)
    await worker.run_until_idle()
    assert await app_keys(app_engine) == ["once"]
    assert await jobs_in_table(app_engine) == []
