"""Lifecycle hooks: on_job_start / on_job_end around every job, whatever becomes of it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import (
    ConfigurationError,
    Discard,
    JobContext,
    Settings,
    Snooze,
    Task,
    Worker,
    enqueue,
)
from sqla_jobs.clock import db_now_plus
from sqla_jobs.execution import Outcome
from sqla_jobs.hooks import OUTCOMES, JobEnd, JobHooks, JobStart, load_hooks
from sqla_jobs.models import Job, WorkerRecord
from sqla_jobs.worker.tally import OUTCOME_NAMES
from tests.helpers import TestDatabase, wait_until
from tests.hook_objects import Recorder, current_label

seen_in_job: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen_in_job.clear()


class Ok(Task, name="tests.hooks.ok"):
    async def run(self, ctx: JobContext) -> None:
        seen_in_job.append(current_label.get())


class OkInThread(Task, name="tests.hooks.ok_in_thread"):
    def run(self, ctx: JobContext) -> None:
        seen_in_job.append(f"{current_label.get()} in {threading.current_thread().name}")


class Boom(Task, name="tests.hooks.boom", max_retries=1, backoff=lambda n: timedelta(0)):
    async def run(self, ctx: JobContext) -> None:
        raise LookupError("boom")


class Sleepy(Task, name="tests.hooks.sleepy"):
    async def run(self, ctx: JobContext) -> None:
        raise Snooze(timedelta(hours=1))


class Unwanted(Task, name="tests.hooks.unwanted"):
    async def run(self, ctx: JobContext) -> None:
        raise Discard("not wanted")


class Forever(Task, name="tests.hooks.forever"):
    async def run(self, ctx: JobContext) -> None:
        seen_in_job.append("started")
        await asyncio.Event().wait()


TASKS = [Ok, OkInThread, Boom, Sleepy, Unwanted, Forever]


def make_worker(database: TestDatabase, **options: Any) -> Worker:
    options.setdefault("tasks", TASKS)
    options.setdefault("queues", ["default", "mail"])
    options.setdefault("poll_interval", timedelta(milliseconds=50))
    options.setdefault("handle_signals", False)
    return Worker(database.url, **options)


async def add(engine: AsyncEngine, *jobs: Job) -> list[str]:
    ids = [str(job.id) for job in jobs]
    async with AsyncSession(engine) as session:
        session.add_all(jobs)
        await session.commit()
    return ids


async def test_hooks_see_each_job_start_and_succeed(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [ok, in_thread] = await add(
        engine, enqueue(Ok(), queue="mail"), enqueue(OkInThread(), queue="mail")
    )
    recorder = Recorder()
    worker = make_worker(database, hooks=[recorder])
    before = datetime.now(UTC)
    assert await worker.run_until_idle() == 2

    starts = {start.id: start for start in recorder.starts}
    assert set(starts) == {ok, in_thread}
    start = starts[ok]
    assert (start.name, start.queue, start.attempt, start.worker_id) == (
        "tests.hooks.ok",
        "mail",
        1,
        worker.id,
    )
    assert start.run_at.tzinfo is not None
    assert start.started_at >= before
    ends = {end.job.id: end for end in recorder.ends}
    assert {end.outcome for end in ends.values()} == {"success"}
    assert ends[ok].job is start
    duration = ends[ok].duration
    assert duration is not None
    assert duration >= timedelta(0)
    assert (ends[ok].error, ends[ok].exception) == (None, None)
    # What the start hook put in a context variable, the job's code sees, in a thread too.
    assert f"job {ok}" in seen_in_job
    assert any(line.startswith(f"job {in_thread} in sqla_jobs") for line in seen_in_job)


async def test_a_failure_reaches_the_end_hook_with_its_exception(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [boom] = await add(engine, enqueue(Boom()))
    ends: list[JobEnd] = []
    worker = make_worker(database, on_job_end=ends.append)
    await worker.run_until_idle()  # attempt 1: retry, attempt 2 (backoff 0): dead

    assert [(end.job.id, end.job.attempt, end.outcome) for end in ends] == [
        (boom, 1, "retry"),
        (boom, 2, "dead"),
    ]
    for end in ends:
        assert isinstance(end.exception, LookupError)
        assert end.error is not None
        assert "LookupError: boom" in end.error


async def test_snoozed_and_discarded_jobs_are_named_so(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [sleepy, unwanted] = await add(engine, enqueue(Sleepy()), enqueue(Unwanted()))
    ends: list[JobEnd] = []
    await make_worker(database, on_job_end=ends.append).run_until_idle()
    assert {end.job.id: end.outcome for end in ends} == {sleepy: "snoozed", unwanted: "dead"}


async def test_a_hook_that_raises_is_logged_and_changes_nothing(
    database: TestDatabase, engine: AsyncEngine, log_records: list[Any]
) -> None:
    [ok] = await add(engine, enqueue(Ok()))
    calls: list[str] = []

    def broken_start(job: JobStart) -> None:
        raise RuntimeError("hook bug")

    async def broken_end(end: JobEnd) -> None:
        raise RuntimeError("hook bug")

    worker = make_worker(
        database,
        on_job_start=[broken_start, lambda job: calls.append("start")],
        on_job_end=[broken_end, lambda end: calls.append(end.outcome)],
    )
    assert await worker.run_until_idle() == 1
    assert calls == ["start", "success"]
    assert worker.outcomes["Completed"] == 1
    async with AsyncSession(engine) as session:
        assert await session.get(Job, uuid.UUID(ok)) is None
    raised = [r for r in log_records if r["message"] == "job hook raised; ignored"]
    assert [r["extra"]["hook"] for r in raised] == [
        broken_start.__qualname__,
        broken_end.__qualname__,
    ]


async def test_a_job_cancelled_on_request_ends_cancelled(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [forever] = await add(engine, enqueue(Forever()))
    ends: list[JobEnd] = []
    worker = make_worker(database, on_job_end=ends.append)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _true(seen_in_job == ["started"]))
    worker.runner.cancel(uuid.UUID(forever), "operator")
    await wait_until(lambda: _true(len(ends) == 1))
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    assert (ends[0].outcome, ends[0].error) == ("cancelled", "cancelled: operator")


async def test_a_job_stopped_by_shutdown_ends_released(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [forever] = await add(engine, enqueue(Forever()))
    ends: list[JobEnd] = []
    worker = make_worker(database, on_job_end=ends.append, shutdown_timeout=timedelta(0))
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _true(seen_in_job == ["started"]))
    worker.stop()
    await asyncio.wait_for(task, timeout=10)
    assert [(end.job.id, end.outcome) for end in ends] == [(forever, "released")]


async def test_a_rescued_job_ends_rescued_without_a_start(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(WorkerRecord).values(
                id="dead-worker",
                hostname="gone",
                pid=1,
                queues=["default"],
                heartbeat_at=db_now_plus(-60),
            )
        )
    job = enqueue(Ok(), queue="mail")
    job.locked_by, job.locked_at = "dead-worker", db_now_plus(-60)
    [lost] = await add(engine, job)
    recorder = Recorder()
    worker = make_worker(
        database,
        hooks=[recorder],
        heartbeat_interval=timedelta(milliseconds=100),
        heartbeat_timeout=timedelta(seconds=1),
    )
    assert await worker.rescuer.rescue() == 1
    [end] = recorder.ends
    assert (end.job.id, end.job.queue, end.job.worker_id) == (lost, "mail", "dead-worker")
    assert (end.outcome, end.duration, end.exception) == ("rescued", None, None)
    assert end.error is not None
    assert end.error.startswith("worker lost")
    assert recorder.starts == []
    await worker.engine.dispose()


def test_without_hooks_the_worker_has_none() -> None:
    assert JobHooks.of() is None
    assert JobHooks.of([], on_job_start=[], on_job_end=None) is None


def test_a_hook_object_without_hook_methods_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="neither an on_job_start nor an on_job_end"):
        JobHooks.of([object()])
    with pytest.raises(ConfigurationError, match="on_job_end must be callable"):
        JobHooks.of(on_job_end=[print, "not a function"])  # type: ignore[list-item]


def test_hooks_load_from_settings() -> None:
    settings = Settings(hooks="tests.hook_objects:Recorder", database_url="sqlite:///unused.db")
    [hooks] = load_hooks(settings.hooks)
    assert isinstance(hooks, Recorder)
    for bad, message in [
        ("tests.hook_objects", "must be written module:attribute"),
        ("tests.nowhere:Recorder", "cannot load hook 'tests.nowhere:Recorder'"),
        ("tests.hook_objects:Nothing", "cannot load hook"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            load_hooks([bad])


async def _true(value: bool) -> bool:
    return value


def test_every_outcome_type_has_a_name() -> None:
    assert set(OUTCOME_NAMES) == set(get_args(Outcome))
    assert set(OUTCOME_NAMES.values()) | {"cancelled", "rescued", "released"} == set(OUTCOMES)
