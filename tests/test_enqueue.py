"""enqueue(): an unsaved Job for the caller's own session and transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import Field
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqla_jobs import (
    EnqueueError,
    Job,
    JobContext,
    PayloadError,
    Task,
    enqueue,
    enqueue_bulk,
    enqueue_many,
)
from tests.helpers import TestDatabase


class SendEmail(Task, name="tests.enqueue.send_email", queue="mail", priority=3):
    to: str
    subject: str = "Hi"

    async def run(self, ctx: JobContext) -> None:
        return None


class Anything(Task, name="tests.enqueue.anything"):
    value: Any

    async def run(self, ctx: JobContext) -> None:
        return None


async def count_jobs(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(Job))) or 0


def test_enqueue_returns_an_unsaved_job_without_io() -> None:
    job = enqueue(SendEmail(to="a@example.com"), context="signup")
    assert job.id is not None
    assert job.name == "tests.enqueue.send_email"
    assert job.queue == "mail"
    assert job.priority == 3
    assert job.payload == {"to": "a@example.com", "subject": "Hi"}
    assert job.context == "signup"
    assert job.error_count == 0
    assert job.locked_by is None


def test_options_can_be_overridden_per_call() -> None:
    job = enqueue(SendEmail(to="a@example.com"), queue="urgent", priority=-5)
    assert (job.queue, job.priority) == ("urgent", -5)


async def test_committed_transaction_makes_one_job(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        job = enqueue(SendEmail(to="a@example.com"), context="signup")
        job_id = job.id
        session.add(job)
        await session.commit()
    async with AsyncSession(engine) as session:
        stored = (await session.scalars(select(Job))).one()
    assert stored.id == job_id
    assert stored.payload == {"to": "a@example.com", "subject": "Hi"}
    assert stored.context == "signup"
    assert stored.created_at.tzinfo is not None
    assert stored.run_at == stored.created_at


async def test_rolled_back_transaction_leaves_no_job(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add(enqueue(SendEmail(to="a@example.com")))
        await session.flush()
        await session.rollback()
    assert await count_jobs(engine) == 0


async def test_job_and_business_write_commit_or_roll_back_together(engine: AsyncEngine) -> None:
    class BusinessError(Exception):
        pass

    async def sign_up_then_fail() -> None:
        async with AsyncSession(engine) as session, session.begin():
            session.add(enqueue(SendEmail(to="a@example.com")))
            raise BusinessError

    with pytest.raises(BusinessError):
        await sign_up_then_fail()
    assert await count_jobs(engine) == 0


def test_sync_session_enqueues_on_any_driver(sync_engine: Engine) -> None:
    # pysqlite on SQLite, psycopg on PostgreSQL: enqueue() does no I/O, so any driver works.
    with Session(sync_engine) as session:
        session.add(enqueue(SendEmail(to="sync@example.com")))
        session.commit()
    with Session(sync_engine) as session:
        stored = session.scalars(select(Job)).one()
        assert stored.payload["to"] == "sync@example.com"
    with Session(sync_engine) as session:
        session.add(enqueue(SendEmail(to="rolled-back@example.com")))
        session.rollback()
    with Session(sync_engine) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


async def test_server_defaults_are_read_by_refresh(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        job = enqueue(SendEmail(to="a@example.com"))
        session.add(job)
        await session.flush()
        # Not fetched at flush (that would slow every enqueue); an AsyncSession refreshes.
        await session.refresh(job)
        assert job.created_at is not None
        assert job.run_at == job.created_at


async def test_run_at_is_stored_as_given(engine: AsyncEngine) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    async with AsyncSession(engine) as session:
        session.add(enqueue(SendEmail(to="a@example.com"), run_at=when))
        await session.commit()
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(Job.run_at))).one() == when


async def test_delay_counts_from_the_database_clock(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add(enqueue(SendEmail(to="a@example.com"), delay=timedelta(hours=1)))
        await session.commit()
    async with AsyncSession(engine) as session:
        job = (await session.scalars(select(Job))).one()
    assert abs((job.run_at - job.created_at) - timedelta(hours=1)) < timedelta(seconds=5)


def test_naive_run_at_is_refused() -> None:
    with pytest.raises(EnqueueError, match="timezone-aware"):
        enqueue(SendEmail(to="a@example.com"), run_at=datetime(2030, 1, 1))


def test_run_at_and_delay_together_are_refused() -> None:
    with pytest.raises(EnqueueError, match="not both"):
        enqueue(
            SendEmail(to="a@example.com"),
            run_at=datetime.now(UTC),
            delay=timedelta(seconds=1),
        )


def test_payload_that_is_not_json_is_refused() -> None:
    with pytest.raises(PayloadError, match="cannot be stored as JSON"):
        enqueue(Anything(value=object()))


def test_payload_with_nul_is_refused() -> None:
    with pytest.raises(PayloadError, match="NUL"):
        enqueue(Anything(value={"nested": ["ok", "bad\x00"]}))
    with pytest.raises(PayloadError, match="NUL"):
        enqueue(Anything(value={"key\x00": 1}))
    with pytest.raises(PayloadError, match="NUL"):
        enqueue(Anything(value="backslash then NUL: \\\x00"))


def test_the_text_backslash_u0000_is_not_a_nul() -> None:
    assert enqueue(Anything(value="\\u0000")).payload == {"value": "\\u0000"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": ""}, "queue must be"),
        ({"priority": 2**31}, "priority must be"),
        ({"priority": "1"}, "priority must be"),
        ({"context": "a\x00b"}, "context must be"),
        ({"delay": 5}, "delay must be a timedelta"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        enqueue(SendEmail(to="a@example.com"), **options)


def test_only_task_instances_can_be_enqueued() -> None:
    with pytest.raises(EnqueueError, match="Task instance"):
        enqueue({"to": "a@example.com"})  # type: ignore[arg-type]  # the point of the test


def test_a_task_without_run_cannot_be_enqueued() -> None:
    class Abstract(Task, name="tests.enqueue.abstract"):
        pass

    with pytest.raises(EnqueueError, match="does not implement run"):
        enqueue(Abstract())


async def test_payload_round_trips_unchanged(engine: AsyncEngine) -> None:
    tricky = {
        "quotes": 'it\'s "quoted" `back`',
        "sql": "'; DROP TABLE sqla_jobs_job; --",
        "unicode": "naïve 𝄞 😀 中文",
        "numbers": [0, -1, 2**53, 1.5],
        "nested": {"null": None, "bool": True, "empty": {}},
    }
    async with AsyncSession(engine) as session:
        session.add(enqueue(Anything(value=tricky)))
        await session.commit()
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(Job.payload))).one() == {"value": tricky}


# --- payloads JSON cannot hold are refused at enqueue, naming the field ----------------------


class Measure(Task, name="tests.enqueue.measure"):
    reading: float
    samples: list[float] = Field(default_factory=list)

    async def run(self, ctx: JobContext) -> None:
        return None


class Blob(Task, name="tests.enqueue.blob"):
    data: bytes = b""
    label: str = ""

    async def run(self, ctx: JobContext) -> None:
        return None


def every_form(task: Task) -> list[Callable[[], object]]:
    """Each way of enqueuing `task` up to the point where its payload is checked."""
    return [
        lambda: enqueue(task),
        lambda: list(enqueue_many([task])),
        # The task is refused before its chunk is written: no table is needed.
        lambda: enqueue_bulk(Session(create_engine("sqlite://")), [task]),
    ]


@pytest.mark.parametrize(
    ("task", "message"),
    [
        pytest.param(Measure(reading=float("nan")), r"Measure: reading is nan", id="nan"),
        pytest.param(Measure(reading=float("inf")), r"Measure: reading is inf", id="inf"),
        pytest.param(
            Measure(reading=1, samples=[0, float("-inf")]), r"samples\[1\] is -inf", id="list"
        ),
        pytest.param(Anything(value=float("nan")), r"Anything: value is nan", id="any-nan"),
        pytest.param(
            Anything(value={"a": [1, {"b": float("inf")}]}), r"value\.a\[1\]\.b is inf", id="deep"
        ),
    ],
)
def test_nan_and_infinities_are_refused_naming_the_field(task: Task, message: str) -> None:
    # Before: the float field failed the whole transaction at commit ("invalid input syntax
    # for type json"), and the `Any` field silently stored null.
    for attempt in every_form(task):
        with pytest.raises(PayloadError, match=message):
            attempt()


@pytest.mark.parametrize(
    ("task", "message"),
    [
        pytest.param(Blob(data=b"\xff\xfe"), r"Blob field 'data' cannot be stored", id="bytes"),
        pytest.param(Blob(label="\ud800"), r"Blob field 'label' cannot be stored", id="surrogate"),
        pytest.param(Anything(value={"\udfff": 1}), r"field 'value' cannot be stored", id="key"),
    ],
)
def test_text_that_is_not_valid_unicode_is_a_payload_error(task: Task, message: str) -> None:
    for attempt in every_form(task):
        with pytest.raises(PayloadError, match=message):
            attempt()


async def test_the_words_nan_and_infinity_in_text_are_fine(engine: AsyncEngine) -> None:
    task = Anything(value={"NaN": "NaN", "Infinity": ["-Infinity", 1.5]})
    async with AsyncSession(engine) as session:
        session.add(enqueue(task))
        await session.commit()
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(Job.payload))).one() == task.model_dump()


# --- delay= counts from the insert, not from the start of the caller's transaction ------------


@pytest.mark.postgresql
@pytest.mark.parametrize("form", ["enqueue", "enqueue_many", "enqueue_bulk"])
async def test_delay_counts_from_the_insert_not_the_transaction_start(
    pg_database: TestDatabase, form: str
) -> None:
    engine = create_async_engine(pg_database.url)
    delay = timedelta(seconds=2)
    tasks = [SendEmail(to=f"{n}@example.com") for n in range(3)]
    try:
        async with AsyncSession(engine) as session:
            # A transaction that has been open a while: now() stays at its start.
            await session.execute(select(func.pg_sleep(1)))
            before_insert = await session.scalar(select(func.clock_timestamp()))
            if form == "enqueue":
                session.add_all(enqueue(task, delay=delay) for task in tasks)
            elif form == "enqueue_many":
                for statement in enqueue_many(tasks, delay=delay):
                    await session.execute(statement)
            else:
                await enqueue_bulk(session, tasks, delay=delay)
            await session.commit()
        async with AsyncSession(engine) as session:
            rows = (await session.execute(select(Job.run_at, Job.created_at))).all()
    finally:
        await engine.dispose()
    assert before_insert is not None
    assert len(rows) == 3
    for run_at, created_at in rows:
        assert run_at >= before_insert + delay
        assert run_at - created_at >= timedelta(seconds=1) + delay


@pytest.mark.postgresql
def test_delay_counts_from_the_insert_on_a_sync_session(pg_database: TestDatabase) -> None:
    engine = create_engine(pg_database.sync_url)
    delay = timedelta(seconds=2)
    try:
        with Session(engine) as session:
            session.execute(select(func.pg_sleep(1)))
            before_insert = session.scalar(select(func.clock_timestamp()))
            enqueue_bulk(session, [SendEmail(to="bulk@example.com")], delay=delay)
            session.add(enqueue(SendEmail(to="one@example.com"), delay=delay))
            session.commit()
        with Session(engine) as session:
            run_ats = session.scalars(select(Job.run_at)).all()
    finally:
        engine.dispose()
    assert before_insert is not None
    assert len(run_ats) == 2
    assert all(run_at >= before_insert + delay for run_at in run_ats)
