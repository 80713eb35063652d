"""Snooze, Discard and Retry raised by a job: the outcome decided, then written on both dialects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.context import ClaimedJob
from sqla_jobs.errors import Discard, JobControl, Retry, Snooze, SqlaJobsError
from sqla_jobs.execution import DeadLetter, Outcome, Snoozed, execute
from sqla_jobs.execution import Retry as RetryOutcome
from sqla_jobs.options import DEFAULT_MAX_SNOOZES
from sqla_jobs.store import JobStore
from sqla_jobs.testing import drain
from tests.helpers import TestDatabase

runs: list[str] = []
snoozed: list[tuple[int, int]] = []


class Controlled(Task, name="tests.control.controlled", max_retries=2):
    action: str

    async def run(self, ctx: JobContext) -> None:
        runs.append(self.action)
        match self.action:
            case "snooze":
                raise Snooze(timedelta(hours=1))
            case "snooze_now":
                raise Snooze(timedelta(0))
            case "discard":
                raise Discard("the account was deleted")
            case "retry":
                raise Retry(delay=timedelta(minutes=3), reason="rate limited")
            case "retry_backoff":
                raise Retry()


class SyncSnoozes(Task, name="tests.control.sync_snoozes", max_snoozes=2):
    def run(self, ctx: JobContext) -> None:
        runs.append("sync")
        snoozed.append((ctx.attempt, ctx.snooze_count))
        raise Snooze(timedelta(0))


TASKS: Mapping[str, type[Task]] = {
    task.__task_options__.name: task for task in (Controlled, SyncSnoozes)
}


@pytest.fixture(autouse=True)
def _clear() -> None:
    runs.clear()
    snoozed.clear()


def claimed(task: Task, *, error_count: int = 0, snooze_count: int = 0) -> ClaimedJob:
    now = datetime.now(UTC)
    return ClaimedJob(
        id=uuid.uuid4(),
        name=type(task).__task_options__.name,
        payload_json=task.model_dump_json(),
        queue="default",
        priority=0,
        run_at=now,
        created_at=now,
        context="",
        error_count=error_count,
        snooze_count=snooze_count,
    )


async def run(job: ClaimedJob) -> Outcome:
    async def in_thread(function: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(function)

    ctx = JobContext.for_job(job, worker_id="w1", state=None)
    return await execute(job, ctx, tasks=TASKS, default_max_retries=20, run_in_thread=in_thread)


def test_the_control_exceptions_are_sqla_jobs_errors() -> None:
    for control in (Snooze(timedelta(1)), Discard("why"), Retry()):
        assert isinstance(control, JobControl)
        assert isinstance(control, SqlaJobsError)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Snooze(timedelta(seconds=-1)),
        lambda: Snooze(5),  # type: ignore[arg-type]  # the mistake under test
        lambda: Snooze(timedelta(seconds=2**33)),
        lambda: Retry(delay=timedelta(seconds=-1)),
        lambda: Discard(""),
    ],
)
def test_bad_arguments_raise_value_error(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="takes a"):
        make()


async def test_snooze_reschedules_without_a_failure() -> None:
    assert await run(claimed(Controlled(action="snooze"))) == Snoozed(delay=timedelta(hours=1))


async def test_a_sync_job_snoozes_too() -> None:
    assert await run(claimed(SyncSnoozes())) == Snoozed(delay=timedelta(0))


async def test_a_snooze_past_max_snoozes_dead_letters_the_job() -> None:
    job = claimed(Controlled(action="snooze"), snooze_count=DEFAULT_MAX_SNOOZES - 1)
    assert isinstance(await run(job), Snoozed)
    outcome = await run(claimed(Controlled(action="snooze"), snooze_count=DEFAULT_MAX_SNOOZES))
    assert isinstance(outcome, DeadLetter)
    assert outcome.error.startswith("snoozed more than its max_snoozes (100) allow")
    assert "Snooze: snoozed for 3600 s" in outcome.error


async def test_discard_dead_letters_at_once_with_its_reason() -> None:
    outcome = await run(claimed(Controlled(action="discard")))
    assert isinstance(outcome, DeadLetter)
    assert outcome.error.rstrip().endswith("Discard: the account was deleted")


async def test_retry_counts_a_failure_with_the_chosen_delay() -> None:
    outcome = await run(claimed(Controlled(action="retry")))
    assert isinstance(outcome, RetryOutcome)
    assert outcome.delay == timedelta(minutes=3)
    assert outcome.error.rstrip().endswith("Retry: rate limited")


async def test_retry_without_a_delay_takes_the_tasks_backoff() -> None:
    outcome = await run(claimed(Controlled(action="retry_backoff"), error_count=1))
    assert isinstance(outcome, RetryOutcome)
    assert outcome.delay == timedelta(seconds=4)


async def test_retry_is_dead_lettered_once_retries_are_spent() -> None:
    outcome = await run(claimed(Controlled(action="retry"), error_count=2))
    assert isinstance(outcome, DeadLetter)
    assert "rate limited" in outcome.error


async def one_job(engine: AsyncEngine) -> Job:
    async with AsyncSession(engine) as session:
        return (await session.scalars(select(Job))).one()


async def dead_letters(engine: AsyncEngine) -> list[DeadLetterJob]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(select(DeadLetterJob)))


async def add(engine: AsyncEngine, task: Task) -> uuid.UUID:
    async with AsyncSession(engine) as session:
        job = enqueue(task)
        job_id = job.id
        session.add(job)
        await session.commit()
        return job_id


def worker(database: TestDatabase) -> Worker:
    return Worker(database.url, tasks=[Controlled, SyncSnoozes], handle_signals=False)


async def test_a_snoozed_job_is_rescheduled_and_counts_a_snooze(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, Controlled(action="snooze"))
    runner = worker(database)
    assert await runner.run_until_idle() == 1
    assert runner.outcomes["Snoozed"] == 1

    job = await one_job(engine)
    assert (job.snooze_count, job.error_count, job.locked_by, job.last_error_message) == (
        1,
        0,
        None,
        None,
    )
    assert job.run_at > job.created_at + timedelta(minutes=59)


async def test_snoozes_run_the_job_again_until_max_snoozes_dead_letters_it(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, SyncSnoozes())
    summary = await drain(engine, tasks=[SyncSnoozes])
    # Two snoozes allowed (max_snoozes=2), the third run is dead-lettered.
    assert runs == ["sync"] * 3
    # A snooze is no attempt; the job sees how often it snoozed.
    assert snoozed == [(1, 0), (1, 1), (1, 2)]
    assert (summary.snoozed, summary.dead_lettered, summary.processed) == (2, 1, 3)
    [dead] = await dead_letters(engine)
    assert "max_snoozes (2)" in (dead.last_error_message or "")


async def test_a_discarded_job_goes_straight_to_the_dead_letter_table(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job_id = await add(engine, Controlled(action="discard"))
    assert await worker(database).run_until_idle() == 1
    [dead] = await dead_letters(engine)
    assert dead.original_job_id == job_id
    assert "the account was deleted" in (dead.last_error_message or "")
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(Job))).all() == []


async def test_a_forced_retry_counts_an_error_and_waits_its_delay(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, Controlled(action="retry"))
    assert await worker(database).run_until_idle() == 1
    job = await one_job(engine)
    assert (job.error_count, job.snooze_count) == (1, 0)
    assert "rate limited" in (job.last_error_message or "")
    assert job.last_failed_at is not None
    assert job.last_failed_at + timedelta(minutes=2) < job.run_at


async def test_a_snooze_is_written_only_by_the_worker_holding_the_job(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job_id = await add(engine, Controlled(action="snooze"))
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(locked_by="w2"))
    store = JobStore(engine)
    snoozed = Snoozed(delay=timedelta(seconds=5))
    assert not await store.write_failure(owner="w1", job_id=job_id, outcome=snoozed)
    assert (await one_job(engine)).snooze_count == 0
    assert await store.write_failure(owner="w2", job_id=job_id, outcome=snoozed)
    job = await one_job(engine)
    assert (job.snooze_count, job.locked_by) == (1, None)


async def test_a_claim_reads_the_snooze_count(engine: AsyncEngine) -> None:
    # Regression: the claim's typed fast path (PostgreSQL) once left the count at 0, so a job
    # that always snoozed was never stopped by max_snoozes.
    await add(engine, Controlled(action="snooze"))
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(snooze_count=7))
    [job] = await JobStore(engine).claim(worker_id="w1", queues=["default"], limit=1)
    assert job.snooze_count == 7
