"""sqla_jobs.testing: the helpers applications use in their own test suites."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any, assert_type

import pytest
from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sqla_jobs import DeadLetterJob, Job, JobContext, PayloadError, SqlaJobsError, Task, enqueue
from sqla_jobs.errors import TransactionUsageError
from sqla_jobs.testing import (
    DrainSummary,
    JobFailedError,
    all_enqueued,
    assert_enqueued,
    drain,
    perform,
    refute_enqueued,
)
from sqla_jobs.worker import Worker

SENT: list[str] = []


class SendEmail(Task, name="tests.testing.send_email", queue="mail"):
    to: str
    subject: str = "Hi"

    async def run(self, ctx: JobContext) -> str:
        SENT.append(self.to)
        return f"sent to {self.to}"


class Report(Task, name="tests.testing.report"):
    # Fields named like the job options: matched through the `fields` mapping.
    queue: str
    priority: str = "low"

    def run(self, ctx: JobContext) -> dict[str, Any]:
        return {"state": ctx.state, "queue": ctx.queue, "attempt": ctx.attempt, "name": ctx.name}


class Explode(Task, name="tests.testing.explode", max_retries=3):
    code: int

    async def run(self, ctx: JobContext) -> None:
        raise ValueError(f"exploded with code {self.code}")


class ExplodeForGood(Task, name="tests.testing.explode_for_good", max_retries=0):
    def run(self, ctx: JobContext) -> None:
        raise RuntimeError("no retries left")


class WritesInTransaction(Task, name="tests.testing.writes_in_transaction"):
    def run(self, ctx: JobContext) -> None:
        with ctx.transaction():
            pass


class Anything(Task, name="tests.testing.anything"):
    value: Any

    async def run(self, ctx: JobContext) -> None:
        return None


@pytest.fixture(autouse=True)
def _forget_sent() -> Iterator[None]:
    SENT.clear()
    yield
    SENT.clear()


def use_sqlite_savepoints(engine: Engine) -> None:
    """Let pysqlite run SAVEPOINTs (SQLAlchemy's recipe): rolling back per test needs them."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def email(to: str, **options: Any) -> Job:
    return enqueue(SendEmail(to=to), **options)


def commit_jobs(engine: Engine, *jobs: Job) -> None:
    with Session(engine) as session:
        session.add_all(jobs)
        session.commit()


# assert_enqueued, refute_enqueued, all_enqueued: what the session sees


def test_sync_session_sees_pending_flushed_and_committed_jobs_once(sync_engine: Engine) -> None:
    commit_jobs(sync_engine, email("committed@example.com"))
    with Session(sync_engine) as session:
        session.add(email("flushed@example.com"))
        session.flush()
        session.add(email("pending@example.com"))
        assert_enqueued(session, SendEmail, count=3)
        assert_enqueued(session, SendEmail, to="pending@example.com", count=1)
        addresses = sorted(task.to for task in all_enqueued(session, SendEmail))
        assert addresses == ["committed@example.com", "flushed@example.com", "pending@example.com"]
        session.rollback()
        assert_enqueued(session, SendEmail, to="committed@example.com", count=1)
        refute_enqueued(session, SendEmail, to="pending@example.com")


def test_jobs_added_without_autoflush_are_seen_once(sync_engine: Engine) -> None:
    with Session(sync_engine, autoflush=False) as session:
        session.add(email("a@example.com"))
        session.flush()
        session.add(email("b@example.com"))
        assert_enqueued(session, SendEmail, count=2)
        with session.no_autoflush:
            session.add(email("c@example.com"))
            assert [t.to for t in all_enqueued(session, SendEmail, to="c@example.com")] == [
                "c@example.com"
            ]
            assert_enqueued(session, SendEmail, count=3)


async def test_async_session_sees_pending_flushed_and_committed_jobs_once(
    engine: AsyncEngine,
) -> None:
    async with AsyncSession(engine) as session:
        session.add(email("committed@example.com"))
        await session.commit()
    async with AsyncSession(engine) as session:
        session.add(email("flushed@example.com"))
        await session.flush()
        session.add(email("pending@example.com"))
        await assert_enqueued(session, SendEmail, count=3)
        await assert_enqueued(session, SendEmail, to="flushed@example.com")
        tasks = await all_enqueued(session, SendEmail)
        assert_type(tasks, list[SendEmail])
        assert sorted(task.to for task in tasks) == [
            "committed@example.com",
            "flushed@example.com",
            "pending@example.com",
        ]
        assert all(isinstance(task, SendEmail) for task in tasks)
        await session.rollback()
        await refute_enqueued(session, SendEmail, to="flushed@example.com")


def test_test_rolled_back_per_test_sees_its_jobs_sync(sync_engine: Engine) -> None:
    # SQLAlchemy's "join a session into an external transaction" recipe: the application code
    # commits, the test's outer transaction rolls everything back at the end.
    use_sqlite_savepoints(sync_engine)
    with sync_engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        session.add(email("a@example.com", context="signup"))
        session.commit()  # the application's own commit: only a savepoint is released
        session.add(email("b@example.com"))
        session.flush()
        assert_enqueued(session, SendEmail, to="a@example.com", context="signup")
        assert_enqueued(session, SendEmail, count=2)
        session.close()
        outer.rollback()
    with Session(sync_engine) as session:
        refute_enqueued(session, SendEmail)


async def test_test_rolled_back_per_test_sees_its_jobs_async(engine: AsyncEngine) -> None:
    use_sqlite_savepoints(engine.sync_engine)
    async with engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint")
        session.add(email("a@example.com"))
        await session.commit()
        session.add(email("b@example.com"))
        await assert_enqueued(session, SendEmail, count=2)
        await session.close()
        await outer.rollback()
    async with AsyncSession(engine) as session:
        await refute_enqueued(session, SendEmail)


def test_failure_lists_what_was_enqueued_and_how_it_differs(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        session.add(email("a@example.com", context="signup"))
        session.add(email("b@example.com", priority=7))
        with pytest.raises(AssertionError) as raised:
            assert_enqueued(session, SendEmail, to="c@example.com", priority=7)
    message = str(raised.value)
    assert message.startswith(
        "expected a job of SendEmail ('tests.testing.send_email') with to='c@example.com', "
        "priority=7; found 0.\nEnqueued SendEmail jobs (2):\n"
    )
    assert (
        "  - SendEmail(to='a@example.com', subject='Hi') queue='mail' priority=0 "
        "context='signup'\n"
        "      differs: priority=0 (expected 7); to='a@example.com' (expected 'c@example.com')"
    ) in message
    assert "      differs: to='b@example.com' (expected 'c@example.com')" in message


def test_failure_without_jobs_of_the_task_names_the_other_jobs(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        session.add(enqueue(Report(queue="q")))
        session.add(enqueue(Report(queue="r")))
        with pytest.raises(AssertionError, match="found 0") as raised:
            assert_enqueued(session, SendEmail)
        assert str(raised.value).endswith(
            "No 'tests.testing.send_email' jobs are enqueued; "
            "other jobs: 'tests.testing.report' x2."
        )
        session.rollback()
        with pytest.raises(AssertionError, match="other jobs: none"):
            assert_enqueued(session, SendEmail)


async def test_async_failure_messages(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add(email("a@example.com"))
        with pytest.raises(AssertionError, match=r"expected 2 jobs of .*; found 1\.") as raised:
            await assert_enqueued(session, SendEmail, count=2)
        assert "      matches" in str(raised.value)
        with pytest.raises(AssertionError, match=r"expected no job of .*to='a@example.com'"):
            await refute_enqueued(session, SendEmail, to="a@example.com")
        with pytest.raises(AssertionError, match=r"other jobs: 'tests\.testing\.send_email' x1"):
            await assert_enqueued(session, Report)


def test_count_queue_priority_and_context_narrow_the_match(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        session.add(email("a@example.com"))
        session.add(email("a@example.com", queue="urgent", priority=5, context="retry"))
        assert_enqueued(session, SendEmail, to="a@example.com", count=2)
        assert_enqueued(session, SendEmail, queue="urgent", priority=5, context="retry", count=1)
        assert_enqueued(session, SendEmail, queue="mail", context="")
        refute_enqueued(session, SendEmail, queue="urgent", priority=4)
        assert_enqueued(session, Report, count=0)
        with pytest.raises(AssertionError, match="found 2"):
            assert_enqueued(session, SendEmail, count=1)


def test_fields_named_like_options_go_in_the_fields_mapping(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        session.add(enqueue(Report(queue="payload-queue", priority="high"), queue="jobs"))
        assert_enqueued(session, Report, {"queue": "payload-queue", "priority": "high"})
        assert_enqueued(session, Report, {"queue": "payload-queue"}, queue="jobs")
        refute_enqueued(session, Report, {"queue": "jobs"})
        [report] = all_enqueued(session, Report, {"priority": "high"})
        assert report == Report(queue="payload-queue", priority="high")


def test_fields_are_compared_on_the_validated_task(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        session.add(enqueue(Anything(value={"nested": [1, 2]})))
        assert_enqueued(session, Anything, value={"nested": [1, 2]})
        refute_enqueued(session, Anything, value={"nested": [2, 1]})


def test_a_payload_that_no_longer_validates_is_reported(sync_engine: Engine) -> None:
    job = email("a@example.com")
    job.payload = {"subject": "no recipient"}
    with Session(sync_engine) as session:
        session.add(job)
        assert_enqueued(session, SendEmail)  # no field criteria: the name is enough
        with pytest.raises(AssertionError, match="does not validate") as raised:
            assert_enqueued(session, SendEmail, to="a@example.com")
        assert "payload does not validate" in str(raised.value)
        with pytest.raises(AssertionError, match=f"job {job.id} has a payload that does not"):
            all_enqueued(session, SendEmail)


def test_mistakes_in_the_question_raise_at_once(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        with pytest.raises(TypeError, match=r"SendEmail has no field 'too' \(its fields: to, sub"):
            assert_enqueued(session, SendEmail, too="a@example.com")
        with pytest.raises(TypeError, match="field 'to' is given twice"):
            assert_enqueued(session, SendEmail, {"to": "a"}, to="b")
        with pytest.raises(TypeError, match="expected a Task class"):
            assert_enqueued(session, "send_email")  # type: ignore[call-overload] # the mistake tested
        with pytest.raises(TypeError, match="count must be an int of at least 0"):
            assert_enqueued(session, SendEmail, count=-1)
    with pytest.raises(TypeError, match="expected a Session or an AsyncSession"):
        refute_enqueued(sync_engine, SendEmail)  # type: ignore[call-overload] # the mistake


# perform: one task inline


def test_perform_runs_a_sync_task_in_the_calling_thread_with_a_context() -> None:
    result = perform(Report(queue="q"), state="clients", queue="reports", error_count=2)
    assert result == {
        "state": "clients",
        "queue": "reports",
        "attempt": 3,
        "name": "tests.testing.report",
    }


async def test_perform_returns_an_awaitable_for_an_async_task() -> None:
    assert await perform(SendEmail(to="a@example.com")) == "sent to a@example.com"
    assert SENT == ["a@example.com"]


def test_perform_refuses_ctx_transaction_clearly() -> None:
    with pytest.raises(TransactionUsageError, match="needs a job run by a Worker"):
        perform(WritesInTransaction())


def test_perform_runs_the_task_as_decoded_from_its_json_payload() -> None:
    with pytest.raises(PayloadError, match="cannot be stored as JSON"):
        perform(Anything(value=object()))


# drain: every due job through a real worker


def test_drain_counts_succeeded_and_failed_jobs_sync(sync_engine: Engine) -> None:
    commit_jobs(
        sync_engine,
        email("a@example.com"),
        email("b@example.com"),
        enqueue(Explode(code=1)),
        enqueue(ExplodeForGood()),
    )
    summary = drain(sync_engine, tasks=[SendEmail, Explode, ExplodeForGood])
    assert (summary.succeeded, summary.failed, summary.retried, summary.dead_lettered) == (
        2,
        2,
        1,
        1,
    )
    assert summary.processed == 4
    assert sorted(SENT) == ["a@example.com", "b@example.com"]
    assert sorted(failure.name for failure in summary.failures) == [
        "tests.testing.explode",
        "tests.testing.explode_for_good",
    ]
    with Session(sync_engine) as session:
        # The retried job waits for its backoff: not due, so not run again by this drain.
        assert_enqueued(session, Explode, code=1)
        assert session.scalar(select(func.count()).select_from(DeadLetterJob)) == 1
    assert drain(sync_engine, tasks=[SendEmail, Explode, ExplodeForGood]) == DrainSummary(
        succeeded=0, failed=0, retried=0, dead_lettered=0, failures=()
    )


def test_drain_takes_a_sessions_engine_and_refuses_uncommitted_jobs(sync_engine: Engine) -> None:
    with Session(sync_engine) as session:
        session.add(email("a@example.com"))
        with pytest.raises(SqlaJobsError, match="commit the session first"):
            drain(session, tasks=[SendEmail])
        session.commit()
        summary = drain(session, tasks=[SendEmail])
    assert (summary.succeeded, summary.failed) == (1, 0)
    assert SENT == ["a@example.com"]


def test_drain_raise_failures_names_each_failed_job(sync_engine: Engine) -> None:
    failing = enqueue(Explode(code=42))
    failing_id = failing.id
    commit_jobs(sync_engine, failing, email("a@example.com"))
    with pytest.raises(JobFailedError) as raised:
        drain(sync_engine, tasks=[SendEmail, Explode], raise_failures=True)
    message = str(raised.value)
    assert message.startswith(f"1 job failed:\n- job {failing_id} (tests.testing.explode):\n")
    assert "    ValueError: exploded with code 42" in message
    [(job_id, name, error)] = raised.value.failures
    assert (job_id, name) == (failing_id, "tests.testing.explode")
    assert "Traceback" in error
    assert SENT == ["a@example.com"]


async def test_drain_with_an_async_engine_and_session(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add_all([email("a@example.com"), enqueue(Explode(code=3))])
        with pytest.raises(SqlaJobsError, match="commit the session first"):
            await drain(session, tasks=[SendEmail, Explode])
        await session.commit()
        summary = await drain(session, tasks=[SendEmail, Explode])
        assert (summary.succeeded, summary.failed, summary.retried) == (1, 1, 1)
        await assert_enqueued(session, Explode, code=3)
    async with AsyncSession(engine) as session:
        session.add(enqueue(ExplodeForGood()))
        await session.commit()
    with pytest.raises(JobFailedError, match=r"RuntimeError: no retries left"):
        await drain(engine, raise_failures=True)
    assert SENT == ["a@example.com"]


async def test_drain_with_a_sync_engine_inside_an_async_test(sync_engine: Engine) -> None:
    commit_jobs(sync_engine, email("a@example.com"))
    summary = drain(sync_engine, tasks=[SendEmail])
    assert (summary.succeeded, summary.failed) == (1, 0)


def test_drain_refuses_what_is_not_a_session_or_engine() -> None:
    with pytest.raises(TypeError, match="drain\\(\\) takes a Session"):
        drain("sqlite://")  # type: ignore[call-overload] # the mistake tested


async def test_worker_counts_outcomes_and_keeps_failed_attempts(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        failing = enqueue(ExplodeForGood())
        failing_id = failing.id
        session.add_all([email("a@example.com"), enqueue(Explode(code=5)), failing])
        await session.commit()
    worker = Worker(engine, tasks=[SendEmail, Explode, ExplodeForGood], handle_signals=False)
    assert await worker.run_until_idle() == 3
    assert worker.outcomes == {"Completed": 1, "Retry": 1, "DeadLetter": 1}
    errors = {name: (job_id, error) for job_id, name, error in worker.failures}
    assert errors["tests.testing.explode_for_good"][0] == failing_id
    assert re.search(r"ValueError: exploded with code 5\s*$", errors["tests.testing.explode"][1])
    assert isinstance(errors["tests.testing.explode"][0], uuid.UUID)
