"""The worker, in-process, on PostgreSQL and SQLite: claim, run, complete / retry / dead-letter."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.clock import db_now, db_now_plus
from sqla_jobs.execution import MAX_ERROR_CHARS
from sqla_jobs.models import WorkerRecord
from sqla_jobs.worker import maintenance
from tests.helpers import TestDatabase, wait_until

ran: list[tuple[str, Any]] = []
"""What the test tasks did, in order; cleared before each test."""


@pytest.fixture(autouse=True)
def _clear_ran() -> None:
    ran.clear()


class Record(Task, name="tests.worker.record"):
    label: str

    async def run(self, ctx: JobContext) -> None:
        ran.append(("record", self.label))


class RecordInThread(Task, name="tests.worker.record_in_thread"):
    label: str

    def run(self, ctx: JobContext) -> None:
        ran.append(("thread", threading.current_thread().name))


class Fail(Task, name="tests.worker.fail"):
    message: str = "boom"

    async def run(self, ctx: JobContext) -> None:
        # Payloads cannot hold NUL; an exception message can, and must still be storable.
        raise ValueError(self.message.replace("<NUL>", "\x00"))


class FailOnce(Task, name="tests.worker.fail_once", max_retries=1):
    async def run(self, ctx: JobContext) -> None:
        raise RuntimeError("always")


class Raise(Task, name="tests.worker.raise"):
    kind: str
    sync: bool = False

    async def run(self, ctx: JobContext) -> None:
        if self.sync:
            await asyncio.to_thread(_raise, self.kind)
        else:
            _raise(self.kind)


def _raise(kind: str) -> None:
    exceptions: dict[str, BaseException] = {
        "system_exit": SystemExit(3),
        "keyboard_interrupt": KeyboardInterrupt(),
        "generator_exit": GeneratorExit(),
    }
    raise exceptions[kind]


class SyncRaise(Task, name="tests.worker.sync_raise"):
    def run(self, ctx: JobContext) -> None:
        raise SystemExit("from a thread")


class ShortBackoff(Task, name="tests.worker.short_backoff", backoff=lambda n: timedelta(hours=n)):
    async def run(self, ctx: JobContext) -> None:
        raise ValueError("later")


class Introspect(Task, name="tests.worker.introspect"):
    async def run(self, ctx: JobContext) -> None:
        ran.append(("ctx", ctx))
        logger.info("inside the job")


class Echo(Task, name="tests.worker.echo"):
    value: Any

    async def run(self, ctx: JobContext) -> None:
        ran.append(("echo", self.value))


class StealLock(Task, name="tests.worker.steal_lock", max_retries=0):
    """Simulate a lock timeout: another worker takes the row while this job still runs."""

    then_fail: bool = False

    async def run(self, ctx: JobContext) -> None:
        engine: AsyncEngine = ctx.state
        async with engine.begin() as connection:
            await connection.execute(
                update(Job).where(Job.id == ctx.job_id).values(locked_by="thief")
            )
        if self.then_fail:
            raise RuntimeError("failing after the lock was lost")


class Gate(Task, name="tests.worker.gate"):
    """Wait for the test to open `ctx.state` (an asyncio.Event)."""

    async def run(self, ctx: JobContext) -> None:
        ran.append(("gate", "entered"))
        await ctx.state.wait()
        ran.append(("gate", "passed"))


class Barrier(Task, name="tests.worker.barrier"):
    async def run(self, ctx: JobContext) -> None:
        # Only passes if `parties` jobs run at the same time.
        await asyncio.wait_for(ctx.state.wait(), timeout=10)
        ran.append(("barrier", ctx.job_id))


TEST_TASKS = [
    Record,
    RecordInThread,
    Fail,
    FailOnce,
    Raise,
    SyncRaise,
    ShortBackoff,
    Introspect,
    Echo,
    StealLock,
    Gate,
    Barrier,
]


def make_worker(database: TestDatabase, **options: Any) -> Worker:
    options.setdefault("tasks", TEST_TASKS)
    options.setdefault("poll_interval", timedelta(milliseconds=50))
    options.setdefault("handle_signals", False)
    return Worker(database.url, **options)


async def add(engine: AsyncEngine, *jobs: Job) -> list[uuid.UUID]:
    """Commit `jobs`, one transaction each, so their created_at values differ."""
    ids = []
    for job in jobs:
        ids.append(job.id)
        async with AsyncSession(engine) as session:
            session.add(job)
            await session.commit()
    return ids


async def jobs_in_table(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(Job))).all())


async def dead_letters(engine: AsyncEngine) -> list[DeadLetterJob]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(DeadLetterJob))).all())


async def make_due(engine: AsyncEngine, ids: Iterable[uuid.UUID] | None = None) -> None:
    """Make retried jobs due now, instead of waiting out their backoff."""
    statement = update(Job).values(run_at=db_now())
    if ids is not None:
        statement = statement.where(Job.id.in_(list(ids)))
    async with engine.begin() as connection:
        await connection.execute(statement)


async def test_a_job_runs_once_and_its_row_is_deleted(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(Record(label="a")))
    processed = await make_worker(database).run_until_idle()
    assert processed == 1
    assert ran == [("record", "a")]
    assert await jobs_in_table(engine) == []


async def test_jobs_run_by_priority_then_age(database: TestDatabase, engine: AsyncEngine) -> None:
    await add(
        engine,
        enqueue(Record(label="old-low"), priority=0),
        enqueue(Record(label="high"), priority=10),
        enqueue(Record(label="new-low"), priority=0),
        enqueue(Record(label="mid"), priority=5),
    )
    await make_worker(database, concurrency=1).run_until_idle()
    assert [label for _, label in ran] == ["high", "mid", "old-low", "new-low"]


async def test_a_job_waits_for_its_run_at(database: TestDatabase, engine: AsyncEngine) -> None:
    [job_id] = await add(engine, enqueue(Record(label="later"), delay=timedelta(hours=1)))
    worker = make_worker(database)
    assert await worker.run_until_idle() == 0
    [job] = await jobs_in_table(engine)
    assert job.locked_by is None
    await make_due(engine, [job_id])
    assert await worker.run_until_idle() == 1
    assert ran == [("record", "later")]


async def test_a_worker_only_serves_its_queues(database: TestDatabase, engine: AsyncEngine) -> None:
    await add(engine, enqueue(Record(label="mail"), queue="mail"), enqueue(Record(label="d")))
    await make_worker(database, queues=["mail"]).run_until_idle()
    assert ran == [("record", "mail")]
    [left] = await jobs_in_table(engine)
    assert left.queue == "default"


async def test_a_failed_job_is_retried_with_exponential_backoff(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(Fail(message="first")))
    worker = make_worker(database)
    for expected_errors, backoff_seconds in [(1, 2), (2, 4), (3, 8)]:
        await worker.run_until_idle()
        [job] = await jobs_in_table(engine)
        assert job.error_count == expected_errors
        assert job.locked_by is None
        assert job.locked_at is None
        assert job.last_failed_at is not None
        delay = (job.run_at - job.last_failed_at).total_seconds()
        assert delay == pytest.approx(backoff_seconds, abs=0.01)
        assert job.last_error_message is not None
        assert "ValueError: first" in job.last_error_message
        assert "Traceback" in job.last_error_message
        await make_due(engine, [job_id])


async def test_a_task_can_choose_its_backoff(database: TestDatabase, engine: AsyncEngine) -> None:
    await add(engine, enqueue(ShortBackoff()))
    await make_worker(database).run_until_idle()
    [job] = await jobs_in_table(engine)
    assert job.last_failed_at is not None
    # backoff(n) is n hours: the first retry is due at once and fails again, the second waits.
    assert job.error_count == 2
    assert (job.run_at - job.last_failed_at).total_seconds() == pytest.approx(3600, abs=0.01)


async def test_an_exhausted_job_moves_to_the_dead_letter_table(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(
        engine, enqueue(FailOnce(), priority=4, queue="default", context="because")
    )
    worker = make_worker(database)
    await worker.run_until_idle()
    [job] = await jobs_in_table(engine)
    assert job.error_count == 1
    await make_due(engine)
    await worker.run_until_idle()
    assert await jobs_in_table(engine) == []
    [dead] = await dead_letters(engine)
    assert dead.original_job_id == job_id
    assert (dead.name, dead.queue, dead.priority, dead.context) == (
        "tests.worker.fail_once",
        "default",
        4,
        "because",
    )
    assert dead.payload == {}
    assert dead.error_count == 2
    assert dead.created_at == job.created_at
    assert dead.last_error_message is not None
    assert "RuntimeError: always" in dead.last_error_message
    assert dead.failed_at >= dead.created_at


async def test_the_worker_max_retries_applies_to_tasks_without_their_own(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(Fail()))
    await make_worker(database, max_retries=0).run_until_idle()
    assert await jobs_in_table(engine) == []
    assert len(await dead_letters(engine)) == 1


async def test_a_lost_lock_is_never_overwritten_on_completion(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(StealLock()))
    await make_worker(database, state=engine).run_until_idle()
    [job] = await jobs_in_table(engine)
    assert job.locked_by == "thief"
    assert job.error_count == 0


async def test_a_lost_lock_is_never_dead_lettered_over(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    # Copy and delete run in one transaction: the delete finds no row it holds, so the copy
    # into the dead-letter table is rolled back too.
    await add(engine, enqueue(StealLock(then_fail=True)))
    await make_worker(database, state=engine).run_until_idle()
    [job] = await jobs_in_table(engine)
    assert (job.locked_by, job.error_count) == ("thief", 0)
    assert await dead_letters(engine) == []


async def insert_locked(
    engine: AsyncEngine, *, label: str, locked_seconds_ago: float, priority: int = 0
) -> uuid.UUID:
    job = enqueue(Record(label=label), priority=priority)
    async with engine.begin() as connection:
        await connection.execute(
            insert(Job).values(
                id=job.id,
                name=job.name,
                payload=job.payload,
                queue=job.queue,
                priority=job.priority,
                context="",
                error_count=0,
                locked_by="crashed-worker",
                locked_at=db_now_plus(-locked_seconds_ago),
            )
        )
    return job.id


async def test_a_lock_no_registration_explains_is_rescued_as_a_failed_attempt(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job_id = await insert_locked(engine, label="orphan", locked_seconds_ago=120)
    worker = make_worker(database, heartbeat_timeout=timedelta(seconds=60))
    assert await worker.rescuer.rescue() == 1
    [job] = await jobs_in_table(engine)
    assert (job.id, job.locked_by, job.error_count) == (job_id, None, 1)
    assert "worker lost: crashed-worker" in (job.last_error_message or "")


async def test_a_fresh_lock_no_registration_explains_waits_for_the_grace_period(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await insert_locked(engine, label="fresh", locked_seconds_ago=10)
    worker = make_worker(database, heartbeat_timeout=timedelta(seconds=60))
    assert await worker.rescuer.rescue() == 0
    await worker.run_until_idle()
    assert ran == []
    [job] = await jobs_in_table(engine)
    assert job.locked_by == "crashed-worker"


async def test_a_live_workers_job_is_never_taken_however_old_its_lock(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    # The old model let any worker claim a lock older than lock_timeout while it still ran.
    async with engine.begin() as connection:
        await connection.execute(
            insert(WorkerRecord).values(
                id="crashed-worker", hostname="h", pid=1, queues=["default"]
            )
        )
    await insert_locked(engine, label="long", locked_seconds_ago=3 * 3600)
    worker = make_worker(database, heartbeat_timeout=timedelta(seconds=60))
    assert await worker.rescuer.rescue() == 0
    await worker.run_until_idle()
    assert ran == []
    [job] = await jobs_in_table(engine)
    assert (job.locked_by, job.error_count) == ("crashed-worker", 0)


async def insert_raw(engine: AsyncEngine, *, name: str, payload: dict[str, Any]) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(Job).values(id=job_id, name=name, payload=payload, context="", error_count=0)
        )
    return job_id


async def test_an_unknown_task_name_is_recorded_and_retried(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await insert_raw(engine, name="tests.worker.nobody", payload={})
    await add(engine, enqueue(Record(label="still served")))
    await make_worker(database).run_until_idle()
    assert ran == [("record", "still served")]
    [job] = await jobs_in_table(engine)
    assert job.error_count == 1
    assert job.last_error_message is not None
    assert "UnknownTaskError" in job.last_error_message
    assert "tests.worker.nobody" in job.last_error_message


async def test_a_payload_that_no_longer_validates_is_recorded(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await insert_raw(engine, name="tests.worker.record", payload={"label": ["not", "a", "str"]})
    await make_worker(database).run_until_idle()
    [job] = await jobs_in_table(engine)
    assert job.error_count == 1
    assert job.last_error_message is not None
    assert "payload does not validate as Record" in job.last_error_message


@pytest.mark.parametrize(
    ("kind", "sync"),
    [
        ("system_exit", False),
        ("keyboard_interrupt", False),
        ("generator_exit", False),
        ("system_exit", True),
        ("keyboard_interrupt", True),
    ],
)
async def test_base_exceptions_fail_the_job_not_the_worker(
    database: TestDatabase, engine: AsyncEngine, kind: str, sync: bool
) -> None:
    await add(engine, enqueue(Raise(kind=kind, sync=sync)), enqueue(Record(label="next")))
    await make_worker(database, concurrency=1).run_until_idle()
    assert ran == [("record", "next")]
    [job] = await jobs_in_table(engine)
    assert job.error_count == 1


async def test_a_sync_run_executes_in_the_worker_thread_pool(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(RecordInThread(label="x")), enqueue(SyncRaise()))
    await make_worker(database).run_until_idle()
    [(kind, thread_name)] = ran
    assert kind == "thread"
    assert thread_name.startswith("sqla_jobs")
    [job] = await jobs_in_table(engine)
    assert job.last_error_message is not None
    assert "SystemExit: from a thread" in job.last_error_message


async def test_error_messages_are_bounded_and_storable(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(Fail(message="x" * 100_000 + "<NUL> tail")))
    await make_worker(database).run_until_idle()
    [job] = await jobs_in_table(engine)
    assert job.last_error_message is not None
    assert len(job.last_error_message) < MAX_ERROR_CHARS + 100
    assert "characters cut" in job.last_error_message
    assert "\\x00 tail" in job.last_error_message


async def test_the_context_carries_the_job_and_the_application_state(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(Introspect(), context="signup", priority=2))
    state = object()
    worker = make_worker(database, state=state)
    await worker.run_until_idle()
    [(_, ctx)] = ran
    assert isinstance(ctx, JobContext)
    assert ctx.job_id == job_id
    assert (ctx.name, ctx.queue, ctx.priority, ctx.context) == (
        "tests.worker.introspect",
        "default",
        2,
        "signup",
    )
    assert (ctx.error_count, ctx.attempt) == (0, 1)
    assert ctx.worker_id == worker.id
    assert ctx.state is state


async def test_log_lines_inside_a_job_carry_the_job(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(Introspect()))
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    logger.enable("sqla_jobs")
    try:
        worker = make_worker(database)
        await worker.run_until_idle()
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
    [inside] = [r for r in records if r["message"] == "inside the job"]
    assert inside["extra"] == {
        "job_id": str(job_id),
        "task": "tests.worker.introspect",
        "attempt": 1,
        "worker_id": worker.id,
    }
    assert any(r["message"] == "job completed" for r in records)


async def test_a_payload_round_trips_through_the_worker_unchanged(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    tricky = {
        "quotes": 'it\'s "quoted" `back` \\ slash',
        "sql": "'); DELETE FROM sqla_jobs_job; --",
        "unicode": "naïve 𝄞 😀 中文 \u200b",
        "numbers": [0, -1, 2**53, 1.25],
        "nested": {"null": None, "bool": False, "list": [[], {}]},
    }
    await add(engine, enqueue(Echo(value=tricky)))
    await make_worker(database).run_until_idle()
    assert ran == [("echo", tricky)]


async def test_concurrency_runs_jobs_at_the_same_time(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    everyone_started = asyncio.Event()
    await add(engine, *(enqueue(Barrier()) for _ in range(4)))

    async def open_when_all_four_run() -> None:
        await wait_until(running_jobs_are(engine, 4))
        everyone_started.set()

    opener = asyncio.create_task(open_when_all_four_run())
    await make_worker(database, concurrency=4, state=everyone_started).run_until_idle()
    await opener
    assert len(ran) == 4


def running_jobs_are(engine: AsyncEngine, count: int) -> Any:
    async def check() -> bool:
        async with AsyncSession(engine) as session:
            locked = await session.scalar(
                select(func.count()).select_from(Job).where(Job.locked_by.is_not(None))
            )
        return locked == count

    return check


@pytest.fixture
async def running_worker(
    database: TestDatabase,
) -> AsyncIterator[tuple[Worker, asyncio.Event, asyncio.Task[None]]]:
    gate = asyncio.Event()
    worker = make_worker(database, state=gate, shutdown_timeout=timedelta(seconds=10))
    task = asyncio.create_task(worker.run())
    yield worker, gate, task
    worker.stop(force=True)
    gate.set()
    await task


async def test_stop_lets_a_running_job_finish_then_releases_locks(
    engine: AsyncEngine, running_worker: tuple[Worker, asyncio.Event, asyncio.Task[None]]
) -> None:
    worker, gate, task = running_worker
    await add(engine, enqueue(Gate()))
    await wait_until(lambda: _async_true(("gate", "entered") in ran))
    worker.stop()
    await asyncio.sleep(0)
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, timeout=10)
    assert ran == [("gate", "entered"), ("gate", "passed")]
    assert await jobs_in_table(engine) == []


async def test_a_job_outliving_the_shutdown_timeout_is_cancelled_and_unlocked(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(Gate()))
    worker = make_worker(
        database, state=asyncio.Event(), shutdown_timeout=timedelta(milliseconds=100)
    )
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _async_true(("gate", "entered") in ran))
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    [job] = await jobs_in_table(engine)
    # Released, not failed: another worker may claim it at once and run it again.
    assert (job.locked_by, job.locked_at, job.error_count) == (None, None, 0)


async def test_a_forced_stop_cancels_at_once(database: TestDatabase, engine: AsyncEngine) -> None:
    await add(engine, enqueue(Gate()))
    worker = make_worker(database, state=asyncio.Event(), shutdown_timeout=timedelta(hours=1))
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _async_true(("gate", "entered") in ran))
    worker.stop()
    worker.stop(force=True)
    await asyncio.wait_for(task, timeout=10)
    assert worker.was_forced
    [job] = await jobs_in_table(engine)
    assert job.locked_by is None


async def test_an_idle_worker_picks_up_a_committed_job(
    engine: AsyncEngine, running_worker: tuple[Worker, asyncio.Event, asyncio.Task[None]]
) -> None:
    await add(engine, enqueue(Record(label="while idle")))
    await wait_until(lambda: _async_true(ran == [("record", "while idle")]))


async def test_several_workers_run_each_job_exactly_once(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(enqueue(Echo(value=n)) for n in range(300))
        await session.commit()
    workers = [make_worker(database, concurrency=8) for _ in range(3)]
    await asyncio.gather(*(w.run_until_idle() for w in workers))
    assert sorted(value for _, value in ran) == list(range(300))
    assert await jobs_in_table(engine) == []


async def _async_true(value: bool) -> bool:
    return value


async def test_successes_are_summarised_at_info_not_logged_one_by_one(
    database: TestDatabase, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "SUMMARY_INTERVAL", timedelta(0))
    await add(engine, *(enqueue(Record(label=str(n))) for n in range(3)))
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    logger.enable("sqla_jobs")
    try:
        worker = make_worker(database)
        await worker.run_until_idle()
        await worker.maintenance.summarise()
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
    assert not any(r["message"] == "job completed" for r in records)
    summaries = [r["extra"] for r in records if r["message"] == "jobs finished"]
    assert sum(summary.get("success", 0) for summary in summaries) == 3
