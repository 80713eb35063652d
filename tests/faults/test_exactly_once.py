"""Exactly-once writes under SIGKILL: `ctx.transaction()` keeps each job's row exactly once.

Worker processes are killed at random moments, again and again, while they drain jobs that
write one application row each through `ctx.transaction()`. Delivery stays at least once (the
ledger counts the attempts, reruns included), but each job's application row exists once.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, enqueue_many
from tests.cli_tasks import ledger
from tests.faults.conftest import SpawnWorker
from tests.faults.transactional_tasks import WriteOnce, app_metadata, app_rows
from tests.helpers import wait_until
from tests.processes import WorkerProcess

JOBS = 200
MAX_KILLS = 15
FAST_RESCUE = {
    "SQLA_JOBS_HEARTBEAT_INTERVAL": "0.2",
    "SQLA_JOBS_HEARTBEAT_TIMEOUT": "1",
    "SQLA_JOBS_POLL_INTERVAL": "0.05",
}


async def scalar_count(engine: AsyncEngine, table: Table | type[Any]) -> int:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(table))) or 0


async def test_transactional_writes_survive_repeated_sigkills_exactly_once(
    fault_engine: AsyncEngine, spawn_worker: SpawnWorker
) -> None:
    async with fault_engine.begin() as connection:
        await connection.run_sync(app_metadata.create_all)
    keys = [f"k{n}" for n in range(JOBS)]
    async with AsyncSession(fault_engine) as session:
        for statement in enqueue_many(WriteOnce(key=key) for key in keys):
            await session.execute(statement)
        await session.commit()

    def start() -> WorkerProcess:
        return spawn_worker(
            "--import", "tests.faults.transactional_tasks", "--concurrency", "10", **FAST_RESCUE
        )

    async def attempts() -> int:
        async with fault_engine.connect() as connection:
            query = select(func.count()).where(ledger.c.event == "attempt")
            return (await connection.scalar(query)) or 0

    rng = random.Random()
    worker = start()
    kills = 0
    while kills < MAX_KILLS and await scalar_count(fault_engine, Job) > 0:
        before = await attempts()

        async def working(before: int = before) -> bool:
            # Started, or drained meanwhile: a kill during start-up would test nothing.
            return await attempts() > before or await scalar_count(fault_engine, Job) == 0

        await wait_until(working, timeout=30, interval=0.05)
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        worker.kill()  # SIGKILL: no shutdown, no lock release, maybe mid-commit
        kills += 1
        worker = start()

    async def drained() -> bool:
        return await scalar_count(fault_engine, Job) == 0

    # The last worker rescues what the killed ones held (after the 1 s heartbeat timeout).
    await wait_until(drained, timeout=30, interval=0.1)
    worker.kill()

    async with fault_engine.connect() as connection:
        per_key: dict[str, int] = dict(
            (
                await connection.execute(
                    select(app_rows.c.key, func.count()).group_by(app_rows.c.key)
                )
            ).all()
        )
    assert await scalar_count(fault_engine, DeadLetterJob) == 0
    duplicates = {key: n for key, n in per_key.items() if n != 1}
    assert duplicates == {}
    assert sorted(per_key) == sorted(keys)
    ran = await attempts()
    assert ran >= JOBS
    print(f"exactly-once: {JOBS} jobs, {kills} kills, {ran - JOBS} at-least-once reruns")
