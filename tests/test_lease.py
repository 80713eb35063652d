"""Leases: a live worker's job never runs twice, and nothing strands a job.

Each test pins one way the old lock model broke (a lock timeout shorter than a job, a live
worker short of connections, a user callable that raised in the heartbeat, a cancelled job of a
vanished worker, a sync job's thread outliving its slot or the shutdown, a row the worker could
not decode, a claim whose reply was lost, one bad row in a rescue).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from sqla_jobs.clock import db_now_plus
from sqla_jobs.models import WorkerRecord
from sqla_jobs.store import JobStore
from sqla_jobs.store import retrying as store_retrying
from sqla_jobs.store.lease import LeaseConnection
from sqla_jobs.worker.claim_loop import LeaseDiedError
from tests.helpers import TestDatabase, wait_until

runs: list[str] = []
gate = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    # New objects per test: a thread a test left behind writes to its own test's list.
    global runs, gate
    runs, gate = [], threading.Event()
    yield
    gate.set()  # never leave a job thread blocked behind the test


class Long(Task, name="tests.lease.long", max_retries=0):
    """Runs for three heartbeat timeouts (of the fast settings below)."""

    async def run(self, ctx: JobContext) -> None:
        runs.append(f"long:{ctx.worker_id}")
        await asyncio.sleep(3.0)


class Quick(Task, name="tests.lease.quick"):
    label: str = ""

    async def run(self, ctx: JobContext) -> None:
        runs.append(f"quick:{self.label}")


class Gated(Task, name="tests.lease.gated"):
    """A plain `def run`: its thread waits for the test's gate."""

    def run(self, ctx: JobContext) -> None:
        mine, my_gate = runs, gate
        mine.append("gated:start")
        my_gate.wait(30)
        mine.append("gated:end")


def _backoff_raising_after_the_first(error_count: int) -> timedelta:
    if error_count:
        raise RuntimeError("a bug in the application's backoff")
    return timedelta(0)


class FailsWithBadBackoff(
    Task, name="tests.lease.bad_backoff", backoff=_backoff_raising_after_the_first
):
    async def run(self, ctx: JobContext) -> None:
        runs.append(f"bad_backoff:{ctx.attempt}")
        raise ValueError("fails every time")


TASKS = [Long, Quick, Gated, FailsWithBadBackoff]
FAST: dict[str, Any] = {
    "heartbeat_interval": timedelta(milliseconds=100),
    "heartbeat_timeout": timedelta(seconds=1),
    "poll_interval": timedelta(milliseconds=50),
    "handle_signals": False,
}


def make_worker(url: str, **options: Any) -> Worker:
    return Worker(url, tasks=TASKS, **(FAST | options))


async def add(engine: AsyncEngine, *jobs: Job) -> list[uuid.UUID]:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        session.add_all(jobs)
        await session.commit()
    return [job.id for job in jobs]


async def job_rows(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(Job))).all())


async def dead_letters(engine: AsyncEngine) -> list[DeadLetterJob]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(DeadLetterJob))).all())


async def insert_locked(
    engine: AsyncEngine,
    task: Task,
    *,
    by: str,
    seconds_ago: float,
    cancel_reason: str | None = None,
) -> uuid.UUID:
    job = enqueue(task)
    async with engine.begin() as connection:
        await connection.execute(
            insert(Job).values(
                id=job.id,
                name=job.name,
                payload=job.payload,
                queue=job.queue,
                priority=0,
                context="",
                error_count=0,
                locked_by=by,
                locked_at=db_now_plus(-seconds_ago),
                cancel_reason=cancel_reason,
            )
        )
    return job.id


def condition(check: Any) -> Any:
    async def predicate() -> bool:
        return bool(check())

    return predicate


async def stop(worker: Worker, task: asyncio.Task[None], *, force: bool = False) -> None:
    worker.stop(force=force)
    await asyncio.wait_for(task, timeout=30)


async def test_a_job_running_three_heartbeat_timeouts_runs_once_beside_another_worker(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    # The old model handed a job to any worker once its lock was older than lock_timeout.
    await add(engine, enqueue(Long()))
    a, b = make_worker(database.url), make_worker(database.url)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await wait_until(lambda: _no_jobs(engine), timeout=20)
    finally:
        await stop(a, tasks[0])
        await stop(b, tasks[1])
    assert len(runs) == 1, runs
    assert a.rescuer.rescued + b.rescuer.rescued == 0
    assert await dead_letters(engine) == []


async def test_a_lock_without_a_registration_is_rescued_and_a_cancelled_one_dead_lettered(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    plain = await insert_locked(engine, Quick(label="orphan"), by="vanished", seconds_ago=60)
    cancelled = await insert_locked(
        engine, Quick(label="cancelled"), by="vanished", seconds_ago=60, cancel_reason="stop it"
    )
    worker = make_worker(database.url)
    assert await worker.rescuer.rescue() == 2
    [row] = await job_rows(engine)
    assert (row.id, row.locked_by, row.error_count) == (plain, None, 1)
    [dead] = await dead_letters(engine)
    assert dead.original_job_id == cancelled
    assert (dead.last_error_message or "").startswith("cancelled: stop it")


async def test_a_backoff_that_raises_falls_back_to_the_default_policy(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(FailsWithBadBackoff()))
    worker = make_worker(database.url)
    await worker.run_until_idle()  # attempt 1 (backoff 0 s), attempt 2 (backoff raises)
    assert runs == ["bad_backoff:1", "bad_backoff:2"]
    [row] = await job_rows(engine)
    assert (row.id, row.error_count, row.locked_by) == (job_id, 2, None)
    async with engine.connect() as connection:
        wait = await connection.scalar(
            select(func.count()).where(Job.run_at > db_now_plus(3), Job.run_at < db_now_plus(5))
        )
    assert wait == 1, "the default policy waits 2**2 s after the second failure"


async def test_a_rescue_whose_backoff_raises_still_rescues(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    # The heartbeat thread used to die here, and its own worker was later "rescued" in turn.
    job_id = await insert_locked(engine, FailsWithBadBackoff(), by="vanished", seconds_ago=60)
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(error_count=3))
    worker = make_worker(database.url)
    assert await worker.rescuer.rescue() == 1
    [row] = await job_rows(engine)
    assert (row.id, row.error_count, row.locked_by) == (job_id, 4, None)


async def test_a_cancelled_sync_job_keeps_its_slot_until_its_thread_returns(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(Gated()))
    worker = make_worker(database.url, concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(condition(lambda: runs == ["gated:start"]))
        worker.runner.cancel(job_id, "operator")
        await wait_until(lambda: _has_dead_letter(engine))
        await add(engine, enqueue(Quick(label="next")))
        await asyncio.sleep(0.3)  # a claim would have happened by now if the slot were free
        assert worker.runner.free_slots == 0
        assert "quick:next" not in runs
        gate.set()
        await wait_until(condition(lambda: "quick:next" in runs))
    finally:
        await stop(worker, task)
    assert runs == ["gated:start", "gated:end", "quick:next"]


async def test_shutdown_keeps_the_lock_of_a_sync_job_until_its_thread_returns(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(Gated()))
    a = make_worker(database.url, shutdown_timeout=timedelta(milliseconds=100))
    task = asyncio.create_task(a.run())
    await wait_until(condition(lambda: runs == ["gated:start"]))
    a.stop()
    await asyncio.sleep(1.5)  # past the shutdown timeout, and past B's chance to claim
    b = make_worker(database.url)
    await b.run_until_idle()
    [row] = await job_rows(engine)
    assert row.locked_by == a.id, "the lock was released while the thread still ran"
    assert not task.done()
    gate.set()
    await asyncio.wait_for(task, timeout=10)
    assert a.exit_code == 0
    assert await job_rows(engine) == [], "the thread's success was recorded"
    assert runs == ["gated:start", "gated:end"]
    async with AsyncSession(engine) as session:
        assert (await session.scalars(select(WorkerRecord))).all() == []


async def test_a_forced_shutdown_leaves_a_running_thread_locked_for_rescue(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(Gated()))
    a = make_worker(database.url, shutdown_timeout=timedelta(seconds=30))
    task = asyncio.create_task(a.run())
    await wait_until(condition(lambda: runs == ["gated:start"]))
    a.stop()
    await stop(a, task, force=True)
    assert a.exit_code == 1
    [row] = await job_rows(engine)
    assert row.locked_by == a.id
    async with AsyncSession(engine) as session:
        [registration] = (await session.scalars(select(WorkerRecord))).all()
    assert registration.id == a.id, "still registered: its jobs are rescued once it is silent"
    b = make_worker(database.url)

    async def rescued() -> bool:
        await b.rescuer.rescue()
        rows = await job_rows(engine)
        return bool(rows) and rows[0].error_count == 1

    await wait_until(rescued, timeout=10)
    [row] = await job_rows(engine)
    assert (row.id, row.locked_by) == (job_id, None)


async def test_a_row_locked_under_a_live_lease_but_not_running_is_released(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    worker = make_worker(database.url)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(condition(worker.lease.is_fresh))
        # As if a claim committed but its reply never reached the worker.
        await insert_locked(engine, Quick(label="stray"), by=worker.lease.holder, seconds_ago=0)
        await wait_until(condition(lambda: runs == ["quick:stray"]), timeout=10)
    finally:
        await stop(worker, task)
    assert worker.maintenance.released_strays == 1


async def test_a_worker_that_loses_its_lease_does_not_record_over_the_rescue(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    [job_id] = await add(engine, enqueue(Gated()))
    worker = make_worker(database.url)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(condition(lambda: runs == ["gated:start"]))
        async with engine.begin() as connection:  # declared dead by another worker
            await connection.execute(update(Job).values(locked_by=None, locked_at=None))
            await connection.execute(WorkerRecord.__table__.delete())
        await wait_until(condition(lambda: worker.lease.holder != worker.id))
        await wait_until(condition(worker.lease.is_fresh))
        gate.set()
        await wait_until(condition(lambda: runs.count("gated:end") >= 1))
        # The job, free again, is claimed under the new lease and runs a second time.
        await wait_until(lambda: _no_jobs(engine), timeout=10)
    finally:
        await stop(worker, task)
    assert runs.count("gated:start") == 2
    assert job_id


async def _no_jobs(engine: AsyncEngine) -> bool:
    return not await job_rows(engine)


async def _has_dead_letter(engine: AsyncEngine) -> bool:
    return bool(await dead_letters(engine))


async def test_an_undecodable_sqlite_row_is_a_failed_attempt_of_that_row(
    sqlite_database: TestDatabase, log_records: list[Any]
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(sqlite_database.url)
    try:
        await add(engine, enqueue(Quick(label="good")))
        bad = uuid.uuid4()
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO sqla_jobs_job (id, name, payload, queue, priority, context, "
                    "error_count, run_at, created_at) VALUES (:id, 'tests.lease.quick', "
                    "'{not json', 'default', 0, '', 0, '2000-01-01 00:00:00.000000', 'yesterday')"
                ),
                {"id": bad.hex},
            )
        await make_worker(sqlite_database.url).run_until_idle()
        assert runs == ["quick:good"]
        async with engine.connect() as connection:
            [row] = (
                await connection.execute(select(Job.id, Job.error_count, Job.last_error_message))
            ).all()
        assert (row.id, row.error_count) == (bad, 1)
        assert "cannot be read" in (row.last_error_message or "")
    finally:
        await engine.dispose()


async def test_a_worker_whose_lease_thread_dies_stops_and_exits_non_zero(
    database: TestDatabase, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(self: LeaseConnection, worker_id: str) -> bool:
        raise SystemExit("not an Exception: nothing in the thread catches it")

    worker = make_worker(database.url)
    task = asyncio.create_task(worker.run())
    await wait_until(condition(worker.lease.is_fresh))
    monkeypatch.setattr(LeaseConnection, "renew", explode)
    with pytest.raises(LeaseDiedError):
        await asyncio.wait_for(task, timeout=10)
    assert worker.exit_code == 1
    await add(engine, enqueue(Quick(label="unseen")))
    assert runs == []


async def test_a_worker_that_cannot_renew_stops_claiming(
    database: TestDatabase, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unanswered(self: LeaseConnection, worker_id: str) -> bool:
        raise OSError("the lease's connection is gone")

    worker = make_worker(database.url)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(condition(worker.lease.is_fresh))
        monkeypatch.setattr(LeaseConnection, "renew", unanswered)
        await wait_until(condition(lambda: not worker.lease.is_fresh()))
        await add(engine, enqueue(Quick(label="held back")))
        await asyncio.sleep(0.3)  # a claim would have happened by now with a fresh lease
        assert runs == []
        monkeypatch.undo()
        # The lease was lost meanwhile (silent past its timeout): it registers anew and claims.
        await wait_until(condition(lambda: runs == ["quick:held back"]), timeout=10)
    finally:
        await stop(worker, task)


async def test_stopping_keeps_the_registration_when_locks_could_not_be_released(
    database: TestDatabase, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: JobStore, *, worker_id: str, keep: Any = ()) -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(store_retrying, "MAX_BACKOFF", timedelta(milliseconds=10))
    worker = make_worker(database.url)
    task = asyncio.create_task(worker.run())
    await wait_until(condition(worker.lease.is_fresh))
    await insert_locked(engine, Quick(), by="someone-else", seconds_ago=0)
    monkeypatch.setattr(JobStore, "release", refused)
    await stop(worker, task)
    assert worker.exit_code == 1
    async with AsyncSession(engine) as session:
        [registration] = (await session.scalars(select(WorkerRecord))).all()
    assert registration.id == worker.id


async def test_one_row_the_database_refuses_does_not_hold_back_the_rescue_of_others(
    pg_database: TestDatabase, log_records: list[Any]
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(pg_database.url)
    try:
        poison = await insert_locked(engine, Quick(label="poison"), by="gone", seconds_ago=60)
        fine = await insert_locked(engine, Quick(label="fine"), by="gone", seconds_ago=60)
        async with engine.begin() as connection:
            # A real refusal by the database, for one row only. Test setup: constant SQL.
            await connection.execute(
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN RAISE EXCEPTION 'refused'; END $$"
                )
            )
            await connection.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE UPDATE ON sqla_jobs_job FOR EACH ROW "
                    f"WHEN (OLD.id = '{poison}') EXECUTE FUNCTION refuse_poison()"
                )
            )
        worker = make_worker(pg_database.url)
        assert await worker.rescuer.rescue() == 1
        rows = {row.id: row for row in await job_rows(engine)}
        assert (rows[fine].locked_by, rows[fine].error_count) == (None, 1)
        assert (rows[poison].locked_by, rows[poison].error_count) == ("gone", 0)
        assert any(r["message"].startswith("rescuing a job failed") for r in log_records)
    finally:
        await engine.dispose()


async def test_a_worker_whose_jobs_use_every_connection_of_its_role_keeps_its_lease(
    pg_database: TestDatabase,
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from sqla_jobs.urls import to_sync_url

    admin = create_async_engine(pg_database.url, isolation_level="AUTOCOMMIT")
    role = f"limited_{uuid.uuid4().hex[:8]}"
    # Test setup, constant SQL: a role that may open 8 connections.
    async with admin.connect() as connection:
        await connection.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 8"))
        await connection.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
    limited_url = make_url(pg_database.url).set(username=role)
    hog = HogState(url=to_sync_url(limited_url).render_as_string(hide_password=False))
    limited = Worker(limited_url, tasks=[HogConnections], state=hog, concurrency=1, **FAST)
    other = make_worker(pg_database.url)
    await add(admin, enqueue(HogConnections()))
    tasks = [asyncio.create_task(limited.run()), asyncio.create_task(other.run())]
    try:
        await wait_until(condition(lambda: hog.exhausted.is_set()), timeout=30)
        await asyncio.sleep(2.5)  # past the heartbeat timeout, with the role at its limit
        assert limited.lease.is_fresh()
        hog.release.set()
        await wait_until(lambda: _no_jobs(admin), timeout=30)
    finally:
        hog.release.set()
        for worker, task in zip((limited, other), tasks, strict=True):
            await stop(worker, task)
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP OWNED BY {role}"))
            await connection.execute(text(f"DROP ROLE {role}"))
        await admin.dispose()
    assert hog.runs == 1
    assert other.rescuer.rescued == 0


class HogState:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runs = 0
        self.exhausted = threading.Event()
        self.release = threading.Event()


class HogConnections(Task, name="tests.lease.hog_connections", queue="lease_hog"):
    """Open connections as the worker's role until the role's limit refuses one, then wait.

    In a queue of its own: the other worker of the test, which does not know this task,
    must not claim it first (it would fail it as unknown, and the retries' backoff could
    outlast the test's wait).
    """

    def run(self, ctx: JobContext) -> None:
        import psycopg

        state: HogState = ctx.state
        state.runs += 1
        held = []
        try:
            while True:
                try:
                    held.append(psycopg.connect(state.url.replace("+psycopg", "")))
                except psycopg.OperationalError:
                    break
            state.exhausted.set()
            state.release.wait(30)
        finally:
            for connection in held:
                connection.close()
