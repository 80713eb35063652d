"""Idle workers wake at once: NOTIFY at commit (PostgreSQL), in-process commits, next due job.

Every worker here polls only every 30 s, so a job that starts within the test's few seconds was
started by a wake-up, not by polling.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sqla_jobs import JobContext, Task, Worker, enqueue, enqueue_bulk, enqueue_many, wakeup
from sqla_jobs.dialects.postgresql import CHANNEL
from tests.helpers import TestDatabase, wait_until

SLOW_POLL = timedelta(seconds=30)
ran: list[str] = []


class Mark(Task, name="tests.wakeups.mark"):
    label: str

    async def run(self, ctx: JobContext) -> None:
        ran.append(self.label)


class Hold(Task, name="tests.wakeups.hold"):
    async def run(self, ctx: JobContext) -> None:
        ran.append("held")
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def has_run(label: str) -> Callable[[], Any]:
    async def check() -> bool:
        return label in ran

    return check


async def commit(engine: AsyncEngine, *jobs: Any) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(jobs)
        await session.commit()


IdleWorker = Callable[..., Any]


@pytest.fixture
async def start_idle_worker() -> AsyncIterator[IdleWorker]:
    """Start workers that poll only every 30 s; stop them after the test."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(database: TestDatabase, queues: list[str] | None = None) -> Worker:
        worker = Worker(
            database.url,
            tasks=[Mark, Hold],
            queues=queues,
            poll_interval=SLOW_POLL,
            handle_signals=False,
        )
        started.append((worker, asyncio.create_task(worker.run())))
        if database.dialect == "postgresql":
            await wait_until(lambda: _true(worker.is_listening))
        # Let the worker finish its first (empty) claim and fall asleep.
        await asyncio.sleep(0.1)
        return worker

    yield start
    for worker, task in started:
        worker.stop(force=True)
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def idle_worker(database: TestDatabase, start_idle_worker: IdleWorker) -> Worker:
    worker: Worker = await start_idle_worker(database)
    return worker


@pytest.fixture
async def pg_engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    from sqla_jobs.engine import create_engine

    engine = create_engine(pg_database.url)
    yield engine
    await engine.dispose()


async def test_a_committed_job_wakes_an_idle_worker(
    engine: AsyncEngine, idle_worker: Worker
) -> None:
    await commit(engine, enqueue(Mark(label="now")))
    await wait_until(has_run("now"), timeout=5)


async def test_a_job_due_soon_is_started_by_the_workers_own_timer(
    engine: AsyncEngine, idle_worker: Worker
) -> None:
    await commit(engine, enqueue(Mark(label="soon"), delay=timedelta(milliseconds=500)))
    await wait_until(has_run("soon"), timeout=5)


async def test_a_commit_from_another_process_wakes_the_worker(
    pg_database: TestDatabase, start_idle_worker: IdleWorker
) -> None:
    await start_idle_worker(pg_database)

    # psycopg in a thread: no in-process session hook can see this commit, only NOTIFY can.
    def insert_with_another_driver() -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        engine = create_engine(pg_database.sync_url)
        try:
            with Session(engine) as session:
                session.add(enqueue(Mark(label="other")))
                session.info.clear()
                session.commit()
        finally:
            engine.dispose()

    # Unhook the in-process path so only the database can deliver the wake-up.
    with _no_in_process_wakeups(wakeup):
        await asyncio.to_thread(insert_with_another_driver)
        await wait_until(has_run("other"), timeout=5)


async def test_the_listener_survives_its_connection_being_terminated(
    pg_database: TestDatabase, pg_engine: AsyncEngine, start_idle_worker: IdleWorker
) -> None:
    idle_worker = await start_idle_worker(pg_database)
    engine = pg_engine

    listeners = text(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
        "AND datname = current_database()"
    )

    async def listener_pids() -> set[int]:
        async with engine.connect() as connection:
            return set((await connection.scalars(listeners)).all())

    [old_pid] = await listener_pids()
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})

    async def listening_again() -> bool:
        pids = await listener_pids()
        return bool(pids) and old_pid not in pids and idle_worker.is_listening

    await wait_until(listening_again, timeout=10)
    with _no_in_process_wakeups(wakeup):
        await commit(engine, enqueue(Mark(label="after reconnect")))
        await wait_until(has_run("after reconnect"), timeout=5)


class _no_in_process_wakeups:
    def __init__(self, module: Any) -> None:
        self._module = module

    def __enter__(self) -> None:
        self._saved = set(self._module._waiters)
        self._module._waiters.clear()

    def __exit__(self, *exc: object) -> None:
        self._module._waiters.update(self._saved)


@pytest.fixture
async def notifications(pg_database: TestDatabase) -> AsyncIterator[asyncio.Queue[str]]:
    url = make_url(pg_database.url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    received: asyncio.Queue[str] = asyncio.Queue()
    await connection.add_listener(CHANNEL, lambda *args: received.put_nowait(args[3]))
    yield received
    await connection.close()


async def test_notifications_come_at_commit_once_per_queue_and_never_for_a_rollback(
    pg_engine: AsyncEngine, notifications: asyncio.Queue[str]
) -> None:
    engine = pg_engine
    if True:
        async with AsyncSession(engine) as session:
            session.add(enqueue(Mark(label="x"), queue="rolled-back"))
            await session.flush()
            await session.rollback()
        async with AsyncSession(engine) as session:
            session.add_all(enqueue(Mark(label=str(n)), queue="mail") for n in range(50))
            session.add_all(enqueue(Mark(label=str(n)), queue="sms") for n in range(50))
            await session.commit()
        async with AsyncSession(engine) as session:
            session.add(enqueue(Mark(label="end"), queue="sentinel"))
            await session.commit()
    # Notifications arrive in commit order: everything before the sentinel has arrived with it.
    received = [await asyncio.wait_for(notifications.get(), timeout=5)]
    while received[-1] != "sentinel":
        received.append(await asyncio.wait_for(notifications.get(), timeout=5))
    assert sorted(received) == ["mail", "sentinel", "sms"]


async def test_released_jobs_wake_other_workers(
    pg_database: TestDatabase, pg_engine: AsyncEngine, start_idle_worker: IdleWorker
) -> None:
    engine = pg_engine
    # A worker holds a job past its shutdown timeout, then releases it on the way out.
    holder = Worker(
        pg_database.url,
        tasks=[Hold],
        queues=["held"],
        poll_interval=timedelta(milliseconds=50),
        shutdown_timeout=timedelta(milliseconds=50),
        handle_signals=False,
    )
    holding = asyncio.create_task(holder.run())
    await commit(engine, enqueue(Hold(), queue="held"))
    await wait_until(has_run("held"))
    await start_idle_worker(pg_database, queues=["held"])
    holder.stop()
    await asyncio.wait_for(holding, timeout=10)
    # The idle worker (30 s poll) now runs it: only the release's NOTIFY can have woken it.
    await wait_until(lambda: _true(ran.count("held") == 2), timeout=5)


async def _true(value: bool) -> bool:
    return value


# --- in-process hooks: installed while someone is subscribed, for every way of enqueuing ------


class Woken:
    """A subscriber that counts its wake-ups; subscribed for the duration of a `with`."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1

    def __enter__(self) -> Woken:
        self._unsubscribe = wakeup.subscribe(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._unsubscribe()


def _session_hooks_installed() -> bool:
    hooks: list[tuple[str, Callable[..., Any]]] = [
        ("after_flush", wakeup._after_flush),
        ("do_orm_execute", wakeup._on_execute),
        ("after_commit", wakeup._after_commit),
        ("after_rollback", wakeup._after_rollback),
    ]
    return any(event.contains(Session, name, hook) for name, hook in hooks)


ENQUEUE_FORMS = ["enqueue", "enqueue_many", "enqueue_bulk"]


async def _enqueue_async(session: AsyncSession, form: str) -> None:
    tasks = [Mark(label=str(n)) for n in range(3)]
    if form == "enqueue":
        session.add_all(enqueue(task) for task in tasks)
    elif form == "enqueue_many":
        for statement in enqueue_many(tasks):
            await session.execute(statement)
    else:
        await enqueue_bulk(session, tasks)


def _enqueue_sync(session: Session, form: str) -> None:
    tasks = [Mark(label=str(n)) for n in range(3)]
    if form == "enqueue":
        session.add_all(enqueue(task) for task in tasks)
    elif form == "enqueue_many":
        for statement in enqueue_many(tasks):
            session.execute(statement)
    else:
        enqueue_bulk(session, tasks)


@pytest.mark.parametrize("form", ENQUEUE_FORMS)
async def test_every_form_of_enqueue_wakes_a_subscriber_at_commit_on_an_async_session(
    engine: AsyncEngine, form: str
) -> None:
    with Woken() as woken:
        async with AsyncSession(engine) as session:
            await _enqueue_async(session, form)
            await session.flush()
            assert woken.count == 0, "not before the commit"
            await session.commit()
        assert woken.count == 1


@pytest.mark.parametrize("form", ENQUEUE_FORMS)
def test_every_form_of_enqueue_wakes_a_subscriber_at_commit_on_a_sync_session(
    sync_engine: Engine, form: str
) -> None:
    with Woken() as woken:
        with Session(sync_engine) as session:
            _enqueue_sync(session, form)
            session.flush()
            assert woken.count == 0, "not before the commit"
            session.commit()
        assert woken.count == 1


@pytest.mark.parametrize("form", ENQUEUE_FORMS)
async def test_a_rollback_wakes_nobody(engine: AsyncEngine, form: str) -> None:
    with Woken() as woken:
        async with AsyncSession(engine) as session:
            await _enqueue_async(session, form)
            await session.flush()
            await session.rollback()
            # The next transaction of the same session enqueues nothing: still no wake-up.
            await session.execute(text("SELECT 1"))
            await session.commit()
        assert woken.count == 0


def test_a_commit_that_enqueues_nothing_wakes_nobody(sync_engine: Engine) -> None:
    with Woken() as woken, Session(sync_engine) as session:
        session.execute(text("SELECT 1"))
        session.commit()
    assert woken.count == 0


def test_hooks_exist_only_while_someone_is_subscribed() -> None:
    assert not _session_hooks_installed()
    first, second = Woken(), Woken()
    with first:
        assert _session_hooks_installed()
        with second:
            assert _session_hooks_installed()
        assert _session_hooks_installed(), "the first subscriber still needs them"
    assert not _session_hooks_installed()
    assert not wakeup.hooks_installed()


def test_unsubscribing_twice_is_harmless() -> None:
    unsubscribe = wakeup.subscribe(lambda: None)
    other = wakeup.subscribe(lambda: None)
    unsubscribe()
    unsubscribe()
    assert _session_hooks_installed()
    other()
    assert not _session_hooks_installed()


def test_subscribing_from_many_threads_leaves_no_hook_behind() -> None:
    def churn() -> None:
        for _ in range(200):
            wakeup.subscribe(lambda: None)()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    with Woken():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert _session_hooks_installed()
    assert not _session_hooks_installed()


async def test_a_stopped_worker_leaves_no_hook_behind(database: TestDatabase) -> None:
    worker = Worker(database.url, tasks=[Mark], handle_signals=False)
    await worker.run_until_idle()
    assert not _session_hooks_installed()
