"""Signals and kills: SIGTERM lets jobs finish, a second one stops at once, SIGKILL loses nothing.

Real worker processes on the private PostgreSQL of the fault suite.
"""

from __future__ import annotations

import signal

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import Job, enqueue
from tests.cli_tasks import HangOnce, Slow, ledger
from tests.faults.conftest import SpawnWorker
from tests.helpers import wait_until
from tests.processes import WorkerProcess, count_where, predicate


async def test_sigterm_lets_the_running_job_finish_and_exits_0(
    fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker()
    async with AsyncSession(fault_engine) as session:
        session.add(enqueue(Slow(key="slow", seconds=1.0)))
        await session.commit()
    await wait_until(predicate(fault_engine, ledger.c.event == "started", equals=1))
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code() == 0
    assert await count_where(fault_engine, ledger.c.event == "finished") == 1
    assert await count_where(fault_engine, table=Job) == 0
    assert "signal received; shutting down gracefully" in worker.output


async def test_sigterm_past_the_shutdown_timeout_releases_the_lock(
    fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker(SQLA_JOBS_SHUTDOWN_TIMEOUT="0.2")
    async with AsyncSession(fault_engine) as session:
        session.add(enqueue(Slow(key="slow", seconds=60)))
        await session.commit()
    await wait_until(predicate(fault_engine, ledger.c.event == "started", equals=1))
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code() == 0
    assert await count_where(fault_engine, Job.locked_by.is_not(None), table=Job) == 0
    assert await count_where(fault_engine, table=Job) == 1


async def test_a_second_signal_exits_at_once(
    fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker(SQLA_JOBS_SHUTDOWN_TIMEOUT="600")
    async with AsyncSession(fault_engine) as session:
        session.add(enqueue(Slow(key="slow", seconds=600)))
        await session.commit()
    await wait_until(predicate(fault_engine, ledger.c.event == "started", equals=1))
    worker.signal(signal.SIGTERM)
    await wait_until(lambda: _contains(worker, "waiting for running jobs"))
    worker.signal(signal.SIGINT)
    assert await worker.exit_code(timeout=15) == 1
    assert await count_where(fault_engine, Job.locked_by.is_not(None), table=Job) == 0


async def test_a_killed_workers_job_is_rescued_after_its_heartbeat_timeout(
    fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    fast_heartbeat = {"SQLA_JOBS_HEARTBEAT_INTERVAL": "0.2", "SQLA_JOBS_HEARTBEAT_TIMEOUT": "1.5"}
    first = spawn_worker(**fast_heartbeat)
    async with AsyncSession(fault_engine) as session:
        session.add(enqueue(HangOnce(key="hang")))
        await session.commit()
    await wait_until(predicate(fault_engine, ledger.c.event == "started", equals=1))
    first.signal(signal.SIGKILL)
    assert await first.exit_code() == -signal.SIGKILL

    # Only the dead worker's silence frees the job.
    second = spawn_worker(**fast_heartbeat)
    await wait_until(predicate(fault_engine, ledger.c.event == "finished", equals=1), timeout=30)
    await wait_until(predicate(fault_engine, equals=0, table=Job))
    assert await count_where(fault_engine, ledger.c.event == "started") == 2
    second.signal(signal.SIGTERM)
    assert await second.exit_code() == 0
    assert "rescued jobs of dead workers" in second.output


async def _contains(worker: WorkerProcess, text: str) -> bool:
    return text in worker.output
