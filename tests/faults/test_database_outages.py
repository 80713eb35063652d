"""Real database faults against real worker processes: killed connections, restarts, outages.

Each test breaks the private PostgreSQL server of ``tests/faults/pg.py`` (never the shared one)
while a ``python -m sqla_jobs.worker`` process drains jobs of ``tests.cli_tasks``, then checks
the ledger those jobs write: every job ran at least once, none was lost, and the worker process
outlived the fault. Delivery is at least once, so a job may run twice when a fault hits between
its ledger write and the deletion of its row; the tests count such duplicates and allow them.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, enqueue_many
from tests.cli_tasks import Note, ledger
from tests.faults.conftest import FaultDatabase, SpawnWorker
from tests.faults.pg import PrivatePostgres
from tests.helpers import wait_until
from tests.processes import WorkerProcess

# The worker's own connections (claims, completions, failures) but not its listener; the jobs'
# ledger writes log in as another user (see the spawn_worker fixture).
CLAIM_AND_COMPLETION = "query NOT LIKE 'LISTEN%'"
LISTEN = "query LIKE 'LISTEN%' AND state = 'idle'"
# A spawned worker process (imports, preflight, lease, LISTEN) took over 10 s to start under
# `-n 3` on a loaded machine: a bound on waiting, not a promise under test.
WORKER_START_TIMEOUT = 60.0


async def count(engine: AsyncEngine, table: Table | type[Any], *where: ColumnElement[bool]) -> int:
    """Count rows of `table`; -1 while the server cannot answer (it is being restarted)."""
    try:
        async with AsyncSession(engine) as session:
            query = select(func.count()).select_from(table).where(*where)
            return (await session.scalar(query)) or 0
    except DBAPIError:
        return -1


def counted(
    engine: AsyncEngine, table: Table | type[Any], check: Callable[[int], bool]
) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        n = await count(engine, table)
        return n >= 0 and check(n)

    return predicate


async def enqueue_notes(engine: AsyncEngine, keys: range) -> None:
    async with AsyncSession(engine) as session:
        for statement in enqueue_many(Note(key=str(k)) for k in keys):
            await session.execute(statement)
        await session.commit()


async def runs_per_key(engine: AsyncEngine) -> dict[str, int]:
    async with AsyncSession(engine) as session:
        rows = await session.execute(select(ledger.c.key, func.count()).group_by(ledger.c.key))
        return {key: n for key, n in rows}


async def assert_all_ran_and_worker_alive(
    engine: AsyncEngine, worker: WorkerProcess, keys: range
) -> int:
    """Check every job ran, none is left or dead-lettered, the worker lives; return duplicates."""
    await wait_until(counted(engine, Job, lambda n: n == 0), timeout=60, interval=0.1)
    runs = await runs_per_key(engine)
    assert set(runs) == {str(k) for k in keys}, "a job was lost"
    assert await count(engine, DeadLetterJob) == 0
    assert worker.process.poll() is None, f"the worker died:\n{worker.output}"
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code() == 0, worker.output
    return sum(n - 1 for n in runs.values())


def progressed(engine: AsyncEngine, since: int) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return await count(engine, ledger) >= since + 50 or await count(engine, Job) == 0

    return predicate


def has_logged(worker: WorkerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return text in worker.output

    return predicate


async def test_killed_claim_and_completion_connections_are_reconnected(
    private_pg: PrivatePostgres,
    fault_db: FaultDatabase,
    fault_engine: AsyncEngine,
    spawn_worker: SpawnWorker,
) -> None:
    keys = range(1500)
    await enqueue_notes(fault_engine, keys)
    worker = spawn_worker("--concurrency", "10")
    killed: list[int] = []
    for _ in range(5):
        # Each kill waits for progress since the last one, so it hits a worker that has
        # reconnected and is still draining.
        since = await count(fault_engine, ledger)
        await wait_until(progressed(fault_engine, since), timeout=30)
        if await count(fault_engine, Job) == 0:
            break
        killed += private_pg.terminate_backends(fault_db.worker_backends(CLAIM_AND_COMPLETION))
    assert killed, "no worker connection was there to kill"
    duplicates = await assert_all_ran_and_worker_alive(fault_engine, worker, keys)
    print(f"killed {len(killed)} worker backends; {duplicates} jobs ran more than once")
    assert "Traceback" not in worker.output


async def test_killed_listen_connection_is_reconnected(
    private_pg: PrivatePostgres,
    fault_db: FaultDatabase,
    fault_engine: AsyncEngine,
    spawn_worker: SpawnWorker,
) -> None:
    # A 30 s poll: a job that starts sooner was woken by a notification.
    worker = spawn_worker(SQLA_JOBS_POLL_INTERVAL="30")
    listening = fault_db.worker_backends(LISTEN)

    async def listens() -> bool:
        return len(private_pg.backend_pids(listening)) == 1

    await wait_until(listens, timeout=WORKER_START_TIMEOUT)  # the worker process starts
    [old] = private_pg.terminate_backends(listening)

    async def listens_again() -> bool:
        return private_pg.backend_pids(listening) not in ([], [old])

    await wait_until(listens_again)
    await enqueue_notes(fault_engine, range(1))
    await wait_until(counted(fault_engine, ledger, lambda n: n == 1), timeout=10)
    assert "listener connection lost; reconnecting" in worker.output
    await assert_all_ran_and_worker_alive(fault_engine, worker, range(1))


async def test_worker_survives_a_server_restart_mid_drain(
    private_pg: PrivatePostgres, fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    keys = range(2000)
    await enqueue_notes(fault_engine, keys)
    worker = spawn_worker("--concurrency", "10")
    await wait_until(counted(fault_engine, ledger, lambda n: n >= 100), timeout=30)
    pending = await count(fault_engine, Job)
    await asyncio.to_thread(private_pg.restart)
    assert pending > 0, "the worker drained every job before the restart"
    duplicates = await assert_all_ran_and_worker_alive(fault_engine, worker, keys)
    print(f"{pending} jobs pending at the restart; {duplicates} ran more than once")
    assert "claim failed" in worker.output or "completing jobs failed" in worker.output


async def test_worker_started_while_the_server_is_down_waits_for_it(
    private_pg: PrivatePostgres, fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    keys = range(50)
    await enqueue_notes(fault_engine, keys)
    await asyncio.to_thread(private_pg.stop)
    try:
        worker = spawn_worker("--log-json")
        # The startup check waits for the database, one line per attempt (default: up to 60 s).
        await wait_until(has_logged(worker, '"attempt": 3'), timeout=30)
        attempts = [
            extra["attempt"]
            for extra in _log_extras(worker)
            if extra["message"] == "database not reachable yet; waiting"
        ]
        assert attempts == sorted(attempts), attempts
        assert worker.process.poll() is None, worker.output
    finally:
        await asyncio.to_thread(private_pg.start)
    await assert_all_ran_and_worker_alive(fault_engine, worker, keys)


def _log_extras(worker: WorkerProcess) -> list[dict[str, Any]]:
    """Return each JSON log line's bound data, with its message under ``"message"``."""
    extras = []
    for line in worker.output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)["record"]
            extras.append({**record["extra"], "message": record["message"]})
    return extras
