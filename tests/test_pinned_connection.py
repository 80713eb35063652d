"""The connections a running worker keeps checked out for its claims and its deletes: lent to
one caller at a time, replaced after a failure, and always given back to the pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SAWarning
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqla_jobs import JobContext, Task, Worker, enqueue
from sqla_jobs.store import JobStore, claims, pinned
from sqla_jobs.store.claims import ClaimStore
from sqla_jobs.store.pinned import PinnedConnection
from tests.helpers import TestDatabase, add_jobs


class Pinned(Task, name="tests.pinned.noop"):
    async def run(self, ctx: JobContext) -> None:
        return None


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def backend_pid(connections: PinnedConnection) -> int:
    async with connections.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")) or 0)


async def test_a_worker_gives_its_pinned_connections_back_to_the_callers_engine(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    """An engine the application passed in stays the application's: when the worker stops, no
    connection of its pool is left checked out (the claims' and the deletes' included)."""
    await add_jobs(engine, *(enqueue(Pinned()) for _ in range(30)))
    worker = Worker(engine, tasks=[Pinned], handle_signals=False)
    assert await worker.run_until_idle() == 30
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]  # a QueuePool's
    # And a second run pins them again, on the same engine.
    await add_jobs(engine, enqueue(Pinned()))
    assert await worker.run_until_idle() == 1
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_claims_running_at_once_on_one_store_each_get_a_connection(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    """The pinned connection is lent to one claim at a time; a claim that finds it lent takes
    one of the pool's, instead of sending a statement on a connection that is mid-query."""
    ids = await add_jobs(engine, *(enqueue(Pinned()) for _ in range(20)))
    store = JobStore(engine)
    store.pin_connections()
    try:
        claims = await asyncio.gather(
            *(store.claim(worker_id=f"w{i}", queues=["default"], limit=5) for i in range(4))
        )
    finally:
        await store.unpin_connections()
    claimed = [job.id for jobs in claims for job in jobs]
    assert sorted(claimed) == sorted(ids)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def connections_of(
    database: TestDatabase, *, pin: bool = True
) -> AsyncIterator[tuple[AsyncEngine, PinnedConnection]]:
    """An engine of `database` and its autocommit `PinnedConnection` (pinned with `pin`);
    unpinned and disposed of at the end."""
    engine = create_async_engine(database.url)
    connections = PinnedConnection(autocommit(engine))
    if pin:
        connections.pin()
    try:
        yield engine, connections
    finally:
        await connections.unpin()
        await engine.dispose()


async def test_a_pinned_connection_is_kept_across_calls_until_unpinned(
    pg_database: TestDatabase,
) -> None:
    async with connections_of(pg_database, pin=False) as (engine, connections):
        # Not pinned: each call has a pooled connection for itself, returned after it.
        await backend_pid(connections)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        connections.pin()
        first = await backend_pid(connections)
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        assert await backend_pid(connections) == first
        await connections.unpin()
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_pinned_connection_goes_back_to_the_pool_after_a_while(
    pg_database: TestDatabase, monkeypatch: Any
) -> None:
    """So the pool's own care (recycle, pre-ping, invalidation) reaches it now and then."""
    monkeypatch.setattr(pinned, "REPIN_AFTER", timedelta(0))
    async with connections_of(pg_database) as (engine, connections):
        await backend_pid(connections)
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_pinned_connection_whose_backend_was_killed_is_replaced(
    pg_database: TestDatabase,
) -> None:
    """The call that finds the connection dead fails (the worker's claim loop backs off and
    retries); the next call has a connection that works."""
    async with connections_of(pg_database) as (engine, connections):
        doomed = await backend_pid(connections)
        async with engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": doomed})
        with pytest.raises(DBAPIError):
            await backend_pid(connections)
        assert await backend_pid(connections) not in (0, doomed)


async def test_a_pinned_connection_whose_statement_was_cancelled_is_replaced(
    pg_database: TestDatabase,
) -> None:
    """A cancel (a shutdown) in the middle of a statement leaves the connection unusable until
    the statement's end is read: the next call does not wait for it, nor fail on it."""
    async with connections_of(pg_database) as (_, connections):

        async def sleep_in_the_database() -> None:
            async with connections.connect() as connection:
                await connection.execute(text("SELECT pg_sleep(30)"))

        first = await backend_pid(connections)
        sleeping = asyncio.create_task(sleep_in_the_database())
        await asyncio.sleep(0.3)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        second = await asyncio.wait_for(backend_pid(connections), timeout=10)
        assert second not in (0, first)


def test_a_connection_pinned_under_an_ended_event_loop_is_not_lent_again(
    pg_database: TestDatabase,
) -> None:
    """A store used again by a second `asyncio.run` (its connection was never unpinned) opens
    a connection of the new loop: asyncpg's connections belong to the loop that made them."""
    engine = create_async_engine(pg_database.url)
    connections = PinnedConnection(autocommit(engine))
    connections.pin()
    first = asyncio.run(backend_pid(connections))

    async def again() -> int:
        try:
            return await backend_pid(connections)
        finally:
            await connections.unpin()
            await engine.dispose()

    assert asyncio.run(again()) not in (0, first)
    # The first loop's connection, which only that loop could have closed, was let go.
    with pytest.warns(SAWarning, match="non-checked-in connection"):
        gc.collect()


async def test_a_worker_waits_for_its_read_of_the_limited_queues_before_it_returns(
    pg_database: TestDatabase, monkeypatch: Any
) -> None:
    """The list of queues with a cluster-wide limit is re-read beside the claims; a read still
    out when the worker stops ends before the worker returns, and gives its connection back."""
    engine = create_async_engine(pg_database.url)
    reads: list[str] = []
    read = ClaimStore._read_limited_queues

    async def slow_read(self: ClaimStore, queues: Any) -> None:
        reads.append("started")
        await asyncio.sleep(0.5)
        await read(self, queues)
        reads.append("ended")

    monkeypatch.setattr(claims, "LIMITS_REFRESH_INTERVAL", timedelta(0))
    monkeypatch.setattr(ClaimStore, "_read_limited_queues", slow_read)
    try:
        await add_jobs(engine, enqueue(Pinned()))
        worker = Worker(engine, tasks=[Pinned], handle_signals=False)
        assert await worker.run_until_idle() == 1
        assert len(reads) >= 2  # the first read, and at least one beside a claim
        assert reads.count("ended") == reads.count("started")
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
