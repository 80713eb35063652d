"""`JobStore`, `LeaseConnection` and `retry_database`: each call on PostgreSQL and SQLite.

Rows are written in the states a test needs (locked, cancelled, due later, silent workers),
then one store method runs and the rows are read back.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import (
    column,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    table,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from sqla_jobs.clock import db_now_plus
from sqla_jobs.dialects import claim_limit_values
from sqla_jobs.execution import DeadLetter, Retry
from sqla_jobs.models import DeadLetterJob, Job, WorkerRecord
from sqla_jobs.store import JobStore, retrying
from sqla_jobs.store.lease import LeaseConnection
from sqla_jobs.store.retrying import DATABASE_ERRORS, GaveUp, retry_database
from tests.conftest import PostgresServer
from tests.helpers import TestDatabase, wait_until

BACKENDS = [
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("sqlite", id="sqlite", marks=pytest.mark.sqlite),
]


@pytest.fixture(scope="module")
def shared_postgresql_database(
    pg_server: PostgresServer, pg_template: str
) -> Iterator[TestDatabase]:
    """One PostgreSQL clone for this module: a clone per test would cost more than the tests."""
    name = f"sqla_jobs_t_{uuid.uuid4().hex[:12]}"
    pg_server.create(name, template=pg_template)
    try:
        yield pg_server.describe(name)
    finally:
        pg_server.drop(name)


@pytest.fixture(scope="module")
def shared_sqlite_database(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> TestDatabase:
    path = tmp_path_factory.mktemp("store") / "store.db"
    shutil.copyfile(sqlite_template, path)
    return TestDatabase(
        dialect="sqlite", url=f"sqlite+aiosqlite:///{path}", sync_url=f"sqlite:///{path}"
    )


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> TestDatabase:
    """This module's database on each backend in turn, emptied for each test."""
    shared: TestDatabase = request.getfixturevalue(f"shared_{request.param}_database")
    empty(shared)
    return shared


def empty(database: TestDatabase) -> None:
    engine = create_engine(database.sync_url)
    try:
        with engine.begin() as connection:
            for model in (Job, DeadLetterJob, WorkerRecord):
                connection.execute(delete(model))
    finally:
        engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> JobStore:
    return JobStore(engine)


async def add_job(
    engine: AsyncEngine,
    *,
    name: str = "tests.store.job",
    payload: dict[str, Any] | None = None,
    queue: str = "default",
    priority: int = 0,
    age: float = 10.0,
    due_in: float = -1.0,
    error_count: int = 0,
    locked_by: str | None = None,
    locked_ago: float = 0.0,
    cancel_reason: str | None = None,
    timeout_seconds: float | None = None,
) -> uuid.UUID:
    """Insert a job created `age` seconds ago, due in `due_in` seconds (negative: overdue)."""
    job_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(Job).values(
                id=job_id,
                name=name,
                payload={"n": 1} if payload is None else payload,
                queue=queue,
                priority=priority,
                created_at=db_now_plus(-age),
                run_at=db_now_plus(due_in),
                context="why",
                error_count=error_count,
                locked_by=locked_by,
                locked_at=None if locked_by is None else db_now_plus(-locked_ago),
                cancel_reason=cancel_reason,
                timeout_seconds=timeout_seconds,
            )
        )
    return job_id


async def add_worker(engine: AsyncEngine, worker_id: str, *, silent_for: float = 0.0) -> None:
    """Register `worker_id`, its last heartbeat `silent_for` seconds ago."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(WorkerRecord).values(
                id=worker_id,
                hostname="host",
                pid=1,
                queues=["default"],
                heartbeat_at=db_now_plus(-silent_for),
            )
        )


async def jobs(engine: AsyncEngine) -> dict[uuid.UUID, Job]:
    async with AsyncSession(engine) as session:
        return {job.id: job for job in await session.scalars(select(Job))}


async def dead_letters(engine: AsyncEngine) -> list[DeadLetterJob]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(select(DeadLetterJob)))


async def worker_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.scalars(select(WorkerRecord.id)))


async def lock_holders(engine: AsyncEngine) -> dict[uuid.UUID, str | None]:
    return {job_id: job.locked_by for job_id, job in (await jobs(engine)).items()}


async def test_claim_returns_the_best_jobs_first_up_to_its_limit(
    store: JobStore, engine: AsyncEngine
) -> None:
    old = await add_job(engine, age=30)
    new = await add_job(engine, age=10)
    urgent = await add_job(engine, priority=5, age=1)
    oldest = await add_job(engine, age=60, priority=-1)

    first = await store.claim(worker_id="w1", queues=["default"], limit=2)
    second = await store.claim(worker_id="w1", queues=["default"], limit=2)
    third = await store.claim(worker_id="w1", queues=["default"], limit=2)

    assert [job.id for job in first] == [urgent, old]
    assert [job.id for job in second] == [new, oldest]
    assert third == []
    assert set((await lock_holders(engine)).values()) == {"w1"}


async def test_claim_skips_locked_cancelled_future_and_other_queues_jobs(
    store: JobStore, engine: AsyncEngine
) -> None:
    due = await add_job(engine)
    await add_job(engine, locked_by="w2", locked_ago=7200)
    await add_job(engine, cancel_reason="stop")
    await add_job(engine, due_in=60)
    await add_job(engine, queue="mail")

    claimed = await store.claim(worker_id="w1", queues=["default"], limit=10)

    assert [job.id for job in claimed] == [due]


async def test_only_the_claims_own_commit_skips_waiting_for_the_disk(
    pg_database: TestDatabase,
) -> None:
    # One connection, so the store's autocommit claim and the checks below share it: a
    # setting the claim left behind would make the job's own transactions asynchronous too.
    engine = create_async_engine(pg_database.url, pool_size=1, max_overflow=0)
    show = text("SHOW synchronous_commit")
    try:
        for _ in range(2):
            await add_job(engine)
        store = JobStore(engine)
        async with engine.connect() as connection:
            # The session's own setting, whatever the server's default: the claim must not
            # change it beyond its own transaction.
            await connection.execute(text("SET synchronous_commit = on"))
            await connection.commit()
            claim = store.statements.claim_jobs(worker_id="w1", queues=["default"], limit=1)
            result = await connection.execute(claim, claim_limit_values(["default"], 1))
            assert len(result.all()) == 1
            assert await connection.scalar(show) == "off"
            await connection.commit()
            assert await connection.scalar(show) == "on"
            await connection.commit()

        assert len(await store.claim(worker_id="w1", queues=["default"], limit=1)) == 1
        async with engine.connect() as connection:
            assert await connection.scalar(show) == "on"
        assert set((await lock_holders(engine)).values()) == {"w1"}
    finally:
        await engine.dispose()


async def test_claim_reads_every_column_of_a_row_by_name(
    store: JobStore, engine: AsyncEngine
) -> None:
    job_id = await add_job(
        engine,
        name="tests.store.named",
        payload={"to": "a@example.com", "tags": ["x"]},
        queue="mail",
        priority=3,
        error_count=2,
        timeout_seconds=1.5,
    )
    [job] = await store.claim(worker_id="w1", queues=["mail", "default"], limit=10)

    assert (job.id, job.name, job.queue, job.priority, job.context) == (
        job_id,
        "tests.store.named",
        "mail",
        3,
        "why",
    )
    assert json.loads(job.payload_json) == {"to": "a@example.com", "tags": ["x"]}
    assert (job.error_count, job.timeout_seconds, job.problem) == (2, 1.5, None)
    now = datetime.now(UTC)
    assert job.created_at.tzinfo is not None
    assert job.run_at.tzinfo is not None
    assert now - timedelta(minutes=1) < job.created_at < job.run_at < now + timedelta(minutes=1)
    assert (await jobs(engine))[job_id].locked_by == "w1"


async def test_an_undecodable_sqlite_row_is_claimed_with_its_problem(
    sqlite_database: TestDatabase,
) -> None:
    engine = create_async_engine(sqlite_database.url)
    try:
        good = await add_job(engine)
        bad = uuid.uuid4()
        async with engine.begin() as connection:
            # Values only a hand-written row can hold: SQLite stores whatever it is given.
            await connection.execute(
                text(
                    "INSERT INTO sqla_jobs_job (id, name, payload, queue, priority, context, "
                    "error_count, run_at, created_at) VALUES (:id, 'tests.store.bad', "
                    "'{not json', 'default', 'high', '', 0, '2000-01-01 00:00:00.000000', "
                    "'yesterday')"
                ),
                {"id": bad.hex},
            )
        claimed = await JobStore(engine).claim(worker_id="w1", queues=["default"], limit=10)
    finally:
        await engine.dispose()

    by_id = {job.id: job for job in claimed}
    assert set(by_id) == {good, bad}
    assert by_id[good].problem is None
    assert by_id[bad].payload_json == "{not json"
    assert by_id[bad].problem == (
        "priority is not a number: 'high'; created_at is not a time: 'yesterday'"
    )


async def test_delete_jobs_deletes_only_the_jobs_the_worker_holds(
    store: JobStore, engine: AsyncEngine
) -> None:
    mine = [await add_job(engine, locked_by="w1") for _ in range(3)]
    theirs = await add_job(engine, locked_by="w2")
    unlocked = await add_job(engine)

    assert await store.delete_jobs(worker_id="w1", job_ids=[mine[0], theirs, unlocked]) == 1
    assert await store.delete_jobs(worker_id="w1", job_ids=mine[1:]) == 2
    assert await store.delete_jobs(worker_id="w1", job_ids=mine) == 0

    assert set(await jobs(engine)) == {theirs, unlocked}


async def test_batches_of_any_size_are_deleted_by_one_postgresql_statement(
    store: JobStore, engine: AsyncEngine
) -> None:
    sent: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            sent.append(statement)

    held = [await add_job(engine, locked_by="w1") for _ in range(6)]
    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        for batch in (held[:1], held[1:3], held[3:]):
            assert await store.delete_jobs(worker_id="w1", job_ids=batch) == len(batch)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
    assert await jobs(engine) == {}
    # PostgreSQL: one array parameter, so asyncpg prepares one statement for every size.
    # SQLite has no arrays: one placeholder per id.
    assert len(set(sent)) == (1 if store.dialect == "postgresql" else 3)


async def test_delete_job_statement_is_guarded_by_the_worker(
    store: JobStore, engine: AsyncEngine
) -> None:
    job_id = await add_job(engine, locked_by="w2")
    async with engine.begin() as connection:
        statement = store.delete_job_statement(worker_id="w1", job_id=job_id)
        assert (await connection.execute(statement)).rowcount == 0
        statement = store.delete_job_statement(worker_id="w2", job_id=job_id)
        assert (await connection.execute(statement)).rowcount == 1


async def test_write_failure_reschedules_a_retry_and_unlocks_the_job(
    store: JobStore, engine: AsyncEngine
) -> None:
    job_id = await add_job(engine, locked_by="w1", error_count=1)
    outcome = Retry(error="it failed", delay=timedelta(minutes=10))

    assert await store.write_failure(owner="w1", job_id=job_id, outcome=outcome)

    job = (await jobs(engine))[job_id]
    assert (job.locked_by, job.locked_at) == (None, None)
    assert (job.error_count, job.last_error_message) == (2, "it failed")
    assert job.last_failed_at is not None
    assert job.last_failed_at + timedelta(minutes=9) < job.run_at
    assert job.run_at < job.last_failed_at + timedelta(minutes=11)


async def test_write_failure_moves_a_dead_letter_to_the_dead_letter_table(
    store: JobStore, engine: AsyncEngine
) -> None:
    job_id = await add_job(
        engine, name="tests.store.dying", payload={"a": [1]}, priority=2, locked_by="w1"
    )
    other = await add_job(engine, locked_by="w1")

    assert await store.write_failure(owner="w1", job_id=job_id, outcome=DeadLetter("last"))

    assert set(await jobs(engine)) == {other}
    [dead] = await dead_letters(engine)
    assert (dead.original_job_id, dead.name, dead.payload, dead.priority) == (
        job_id,
        "tests.store.dying",
        {"a": [1]},
        2,
    )
    assert (dead.queue, dead.context, dead.error_count, dead.last_error_message) == (
        "default",
        "why",
        1,
        "last",
    )
    assert dead.id != job_id


@pytest.mark.parametrize(
    "outcome",
    [Retry(error="late", delay=timedelta(seconds=5)), DeadLetter(error="late")],
    ids=["retry", "dead_letter"],
)
async def test_write_failure_changes_nothing_when_another_worker_holds_the_job(
    store: JobStore, engine: AsyncEngine, outcome: Retry | DeadLetter
) -> None:
    theirs = await add_job(engine, locked_by="w2")
    unlocked = await add_job(engine)
    before = await jobs(engine)

    assert not await store.write_failure(owner="w1", job_id=theirs, outcome=outcome)
    assert not await store.write_failure(owner="w1", job_id=unlocked, outcome=outcome)
    assert not await store.write_failure(owner="w1", job_id=uuid.uuid4(), outcome=outcome)

    after = await jobs(engine)
    assert {job_id: _state(job) for job_id, job in after.items()} == {
        job_id: _state(job) for job_id, job in before.items()
    }
    assert await dead_letters(engine) == []


def _state(job: Job) -> tuple[Any, ...]:
    return (job.locked_by, job.error_count, job.last_error_message, job.run_at)


async def test_dead_letter_unowned_moves_only_an_unlocked_job(
    store: JobStore, engine: AsyncEngine
) -> None:
    unlocked = await add_job(engine, cancel_reason="stop")
    held = await add_job(engine, locked_by="w1", cancel_reason="stop")

    assert await store.dead_letter_unowned(job_id=unlocked, error="cancelled: stop")
    assert not await store.dead_letter_unowned(job_id=held, error="cancelled: stop")
    assert not await store.dead_letter_unowned(job_id=uuid.uuid4(), error="gone")

    assert set(await jobs(engine)) == {held}
    [dead] = await dead_letters(engine)
    assert (dead.original_job_id, dead.last_error_message) == (unlocked, "cancelled: stop")


async def test_release_unlocks_the_workers_jobs_but_those_it_keeps(
    store: JobStore, engine: AsyncEngine
) -> None:
    a, b, c = [await add_job(engine, locked_by="w1") for _ in range(3)]
    theirs = await add_job(engine, locked_by="w2")

    assert await store.release(worker_id="w1", keep=[b]) == 2
    assert await lock_holders(engine) == {a: None, b: "w1", c: None, theirs: "w2"}
    assert all(job.locked_at is None for job in (await jobs(engine)).values() if not job.locked_by)

    assert await store.release(worker_id="w1") == 1
    assert await lock_holders(engine) == {a: None, b: None, c: None, theirs: "w2"}
    assert await store.release(worker_id="w1") == 0


async def test_release_jobs_unlocks_only_the_given_jobs_the_worker_holds(
    store: JobStore, engine: AsyncEngine
) -> None:
    a, b = [await add_job(engine, locked_by="w1") for _ in range(2)]
    theirs = await add_job(engine, locked_by="w2")

    assert await store.release_jobs(worker_id="w1", job_ids=[a, theirs]) == 1
    assert await lock_holders(engine) == {a: None, b: "w1", theirs: "w2"}


async def test_held_jobs_are_the_ids_the_worker_holds(store: JobStore, engine: AsyncEngine) -> None:
    a, b = [await add_job(engine, locked_by="w1") for _ in range(2)]
    await add_job(engine, locked_by="w2")
    await add_job(engine)

    assert await store.held_jobs(worker_id="w1") == {a, b}
    assert await store.held_jobs(worker_id="nobody") == set()


async def test_cancel_requests_are_the_workers_cancelled_jobs(
    store: JobStore, engine: AsyncEngine
) -> None:
    stop = await add_job(engine, locked_by="w1", cancel_reason="by the operator")
    empty = await add_job(engine, locked_by="w1", cancel_reason="")
    await add_job(engine, locked_by="w1")
    await add_job(engine, locked_by="w2", cancel_reason="theirs")
    await add_job(engine, cancel_reason="queued")

    requests = await store.cancel_requests(worker_id="w1")

    assert sorted(requests) == sorted([(stop, "by the operator"), (empty, "")])


async def test_unowned_cancelled_jobs_are_the_cancelled_jobs_no_worker_holds(
    store: JobStore, engine: AsyncEngine
) -> None:
    a = await add_job(engine, cancel_reason="a")
    b = await add_job(engine, cancel_reason="b")
    await add_job(engine, locked_by="w1", cancel_reason="held")
    await add_job(engine)

    assert sorted(await store.unowned_cancelled_jobs(limit=10)) == sorted([(a, "a"), (b, "b")])
    [one] = await store.unowned_cancelled_jobs(limit=1)
    assert one in {(a, "a"), (b, "b")}


async def test_declare_dead_workers_ends_only_silent_registrations(
    store: JobStore, engine: AsyncEngine
) -> None:
    await add_worker(engine, "silent-1", silent_for=120)
    await add_worker(engine, "silent-2", silent_for=31)
    await add_worker(engine, "alive", silent_for=5)

    dead = await store.declare_dead_workers(heartbeat_timeout=timedelta(seconds=30))

    assert sorted(dead) == ["silent-1", "silent-2"]
    assert await worker_ids(engine) == {"alive"}
    assert await store.declare_dead_workers(heartbeat_timeout=timedelta(seconds=30)) == []


async def test_lost_jobs_are_locks_of_no_registration_older_than_the_grace(
    store: JobStore, engine: AsyncEngine
) -> None:
    await add_worker(engine, "alive")
    await add_job(engine, locked_by="alive", locked_ago=86_400)
    orphan = await add_job(
        engine, name="tests.store.orphan", error_count=3, locked_by="vanished", locked_ago=120
    )
    cancelled = await add_job(engine, locked_by="vanished", locked_ago=120, cancel_reason="stop")
    await add_job(engine, locked_by="claiming", locked_ago=1)
    await add_job(engine)

    lost = await store.lost_jobs(grace=timedelta(seconds=30), limit=10)

    assert [
        (job.id, job.name, job.error_count, job.locked_by, job.cancel_reason, job.queue)
        for job in sorted(lost, key=lambda job: job.error_count)
    ] == [
        (cancelled, "tests.store.job", 0, "vanished", "stop", "default"),
        (orphan, "tests.store.orphan", 3, "vanished", None, "default"),
    ]
    assert all(job.run_at.tzinfo is not None for job in lost)
    assert len(await store.lost_jobs(grace=timedelta(seconds=30), limit=1)) == 1
    assert len(await store.lost_jobs(grace=timedelta(0), limit=10)) == 3


async def test_a_lock_without_a_time_is_lost_whatever_the_grace(
    store: JobStore, engine: AsyncEngine
) -> None:
    job_id = await add_job(engine)
    async with engine.begin() as connection:
        await connection.execute(update(Job).values(locked_by="by-hand", locked_at=None))

    [lost] = await store.lost_jobs(grace=timedelta(hours=1), limit=10)
    assert (lost.id, lost.locked_by) == (job_id, "by-hand")


async def test_next_due_is_none_when_no_job_is_scheduled(
    store: JobStore, engine: AsyncEngine
) -> None:
    assert await store.next_due(queues=["default"]) is None
    await add_job(engine)  # due already: not scheduled
    await add_job(engine, due_in=60, queue="mail")
    await add_job(engine, due_in=60, locked_by="w1")
    assert await store.next_due(queues=["default"]) is None


async def test_next_due_is_the_time_until_the_earliest_scheduled_job(
    store: JobStore, engine: AsyncEngine
) -> None:
    await add_job(engine, due_in=600)
    await add_job(engine, due_in=60)
    await add_job(engine, due_in=5, queue="mail")

    due_in = await store.next_due(queues=["default"])
    assert due_in is not None
    assert timedelta(seconds=5) < due_in <= timedelta(seconds=60)
    due_in = await store.next_due(queues=["default", "mail"])
    assert due_in is not None
    assert timedelta(0) < due_in <= timedelta(seconds=5)


async def test_refresh_statistics_is_false_on_sqlite(sqlite_database: TestDatabase) -> None:
    engine = create_async_engine(sqlite_database.url)
    try:
        assert await JobStore(engine).refresh_statistics() is False
    finally:
        await engine.dispose()


async def test_refresh_statistics_analyzes_a_postgresql_table_that_outgrew_its_statistics(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url)
    store = JobStore(engine)
    try:
        assert await store.refresh_statistics() is False
        async with engine.begin() as connection:
            await connection.execute(
                insert(Job).from_select(
                    ["id", "name", "payload", "queue"],
                    select(
                        func.gen_random_uuid(),
                        func.concat("tests.store.bulk.", column("n")),
                        func.jsonb_build_object("n", column("n")),
                        literal("default"),
                    ).select_from(func.generate_series(1, 10_001).alias("n")),
                )
            )
        # The inserting backend's statistics reach pg_stat_user_tables once it reports them.
        await engine.dispose()
        refreshed: list[bool] = []

        async def refreshed_once() -> bool:
            refreshed.append(await store.refresh_statistics())
            return refreshed[-1]

        await wait_until(refreshed_once, timeout=15, interval=0.2)
        assert await store.refresh_statistics() is False
    finally:
        await engine.dispose()


async def test_the_lease_registers_renews_and_unregisters_a_worker(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    lease = LeaseConnection(make_url(database.url), timeout=timedelta(seconds=5))
    try:
        await lease.register("w1", ["default", "mail"])
        await lease.register("w1", ["default", "mail"])  # a retried registration is no error
        async with AsyncSession(engine) as session:
            [record] = await session.scalars(select(WorkerRecord))
        assert (record.id, record.hostname, record.pid, record.queues) == (
            "w1",
            socket.gethostname(),
            os.getpid(),
            ["default", "mail"],
        )

        assert await lease.renew("w1") is True
        assert await lease.renew("stranger") is False

        await lease.unregister("w1")
        assert await worker_ids(engine) == set()
        assert await lease.renew("w1") is False
    finally:
        await lease.close()


async def test_a_lease_whose_registration_was_deleted_is_not_renewed(
    database: TestDatabase, engine: AsyncEngine, store: JobStore
) -> None:
    lease = LeaseConnection(make_url(database.url), timeout=timedelta(seconds=5))
    try:
        await lease.register("w1", ["default"])
        async with engine.begin() as connection:
            await connection.execute(update(WorkerRecord).values(heartbeat_at=db_now_plus(-3600)))
        assert await store.declare_dead_workers(heartbeat_timeout=timedelta(minutes=1)) == ["w1"]
        assert await lease.renew("w1") is False
    finally:
        await lease.close()


async def test_a_closed_lease_can_be_closed_again_and_reopened(database: TestDatabase) -> None:
    lease = LeaseConnection(make_url(database.url), timeout=timedelta(seconds=5))
    await lease.close()
    try:
        await lease.register("w1", ["default"])
        await lease.close()
        await lease.close()
        assert await lease.renew("w1") is True
    finally:
        await lease.close()


_ACTIVITY = table(
    "pg_stat_activity",
    column("pid"),
    column("datname"),
    column("backend_type"),
    schema="pg_catalog",
)


async def other_backends(engine: AsyncEngine) -> set[int]:
    """Return the pids of this database's backends other than the asking connection's."""
    async with engine.connect() as connection:
        pids = await connection.scalars(
            select(_ACTIVITY.c.pid).where(
                _ACTIVITY.c.datname == func.current_database(),
                _ACTIVITY.c.pid != func.pg_backend_pid(),
                _ACTIVITY.c.backend_type == "client backend",
            )
        )
        return set(pids)


async def test_a_lease_reconnects_after_its_backend_was_terminated(
    shared_postgresql_database: TestDatabase,
) -> None:
    empty(shared_postgresql_database)
    url = shared_postgresql_database.url
    # NullPool: the test's own connection is never among the backends it counts or terminates.
    engine = create_async_engine(url, poolclass=NullPool)
    lease = LeaseConnection(make_url(url), timeout=timedelta(seconds=5))
    try:
        before = await other_backends(engine)
        await lease.register("w1", ["default"])
        [backend] = await other_backends(engine) - before
        async with engine.connect() as connection:
            # Waits (up to 5 s) until the backend has exited.
            assert await connection.scalar(select(func.pg_terminate_backend(backend, 5000)))

        with pytest.raises(DATABASE_ERRORS):
            await lease.renew("w1")
        assert await lease.renew("w1") is True
        [new_backend] = await other_backends(engine) - before
        assert new_backend != backend

        await lease.close()

        async def closed() -> bool:
            return not await other_backends(engine) - before

        await wait_until(closed)
    finally:
        await lease.close()
        await engine.dispose()


def database_error() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("the database is down"))


class Flaky:
    """An operation that raises `errors` in turn, then returns its call count."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.calls


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry at once: the waits themselves are `backoff_delay`'s, tested on their own."""
    monkeypatch.setattr(retrying, "backoff_delay", lambda failures: timedelta(0))


@pytest.fixture
def warnings() -> Iterator[list[Any]]:
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="WARNING")
    logger.enable("sqla_jobs")
    try:
        yield records
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)


def test_the_backoff_between_database_errors_doubles_up_to_its_cap() -> None:
    delays = [retrying.backoff_delay(failures) for failures in (0, 1, 2, 3, 6, 7, 1000)]
    assert [delay.total_seconds() for delay in delays] == [0.2, 0.2, 0.4, 0.8, 6.4, 10, 10]


async def test_retry_database_retries_database_errors_until_the_operation_succeeds(
    no_backoff: None, warnings: list[Any]
) -> None:
    operation = Flaky(database_error(), OSError("reset"), TimeoutError())
    assert await retry_database(operation, what="reading failed", attempts=None) == 4
    assert [(r["message"], r["extra"]["failures"]) for r in warnings] == [
        ("reading failed", 1),
        ("reading failed", 2),
        ("reading failed", 3),
    ]
    assert "the database is down" in warnings[0]["extra"]["error"]


async def test_retry_database_gives_up_after_its_attempts(no_backoff: None) -> None:
    error = database_error()
    operation = Flaky(error, error, error)
    with pytest.raises(GaveUp) as raised:
        await retry_database(operation, what="testing", attempts=2)
    assert operation.calls == 2
    assert raised.value.__cause__ is error
    assert str(raised.value) == "testing"


async def test_retry_database_gives_up_at_once_when_stopping() -> None:
    stopping = asyncio.Event()
    stopping.set()
    operation = Flaky(database_error(), database_error())
    with pytest.raises(GaveUp):
        await retry_database(operation, what="testing", stopping=stopping)
    assert operation.calls == 1


async def test_retry_database_stops_waiting_when_stopping_is_set() -> None:
    stopping = asyncio.Event()
    operation = Flaky(*[database_error() for _ in range(100)])
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    with pytest.raises(GaveUp):
        # Without `stopping`, the backoff between 100 failures would last minutes.
        await retry_database(operation, what="testing", stopping=stopping)
    assert 1 <= operation.calls < 100


@pytest.mark.parametrize(
    "error",
    [ValueError("a bug"), KeyError("x"), asyncio.CancelledError()],
    ids=lambda error: type(error).__name__,
)
async def test_retry_database_passes_other_errors_through_at_once(error: BaseException) -> None:
    operation = Flaky(error)
    with pytest.raises(type(error)):
        await retry_database(operation, what="testing")
    assert operation.calls == 1
