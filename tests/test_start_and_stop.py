"""What a worker does around its jobs when it starts and stops, and that none of it waits for
longer than it must: the first maintenance round, a stop in the middle of a round, the last
batch of deletes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import Job, JobContext, Task, Worker, enqueue
from sqla_jobs.execution import Completed
from sqla_jobs.store import JobStore
from sqla_jobs.worker.recorder import OutcomeRecorder
from tests.helpers import TestDatabase, add_jobs, wait_until


class Noted(Task, name="tests.start_stop.noted"):
    """Does nothing; only its row matters here."""

    async def run(self, ctx: JobContext) -> None:
        return None


FAST: dict[str, Any] = {
    "heartbeat_interval": timedelta(milliseconds=100),
    "heartbeat_timeout": timedelta(seconds=1),
    "handle_signals": False,
}


async def count_jobs(engine: AsyncEngine, *where: Any) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(Job).where(*where))
    return int(count or 0)


async def test_the_first_maintenance_round_rescues_while_a_claim_holds_the_claim_lock(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    """A worker that has just started holds no job: its first round leaves out the duties about
    its own jobs, whose reconciliation waits for the claim lock. So neither holds up the other:
    the rescue of a dead worker's job runs while a claim is in flight."""
    [orphan] = await add_jobs(engine, enqueue(Noted()))
    async with engine.begin() as connection:
        await connection.execute(
            update(Job)
            .where(Job.id == orphan)
            .values(locked_by="vanished", locked_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    worker = Worker(database.url, tasks=[Noted], **FAST)
    stopping = asyncio.Event()
    await worker.lease.start()
    try:
        async with worker.claim_loop.lock:
            maintaining = asyncio.create_task(worker.maintenance.run(stopping))

            async def rescued() -> bool:
                return await count_jobs(engine, Job.locked_by.is_(None), Job.error_count == 1) == 1

            await wait_until(rescued, timeout=10)
            stopping.set()
            await asyncio.wait_for(maintaining, timeout=10)
    finally:
        await worker.lease.stop(unregister=True)
        await worker.engine.dispose()


async def test_a_stop_ends_a_maintenance_round_between_two_duties(
    database: TestDatabase, monkeypatch: Any
) -> None:
    worker = Worker(database.url, tasks=[Noted], **FAST)
    stopping = asyncio.Event()
    done: list[str] = []

    async def rescue_then_stop() -> int:
        done.append("rescue")
        stopping.set()
        return 0

    async def dead_letter_cancelled() -> None:
        done.append("dead-letter cancelled")

    monkeypatch.setattr(worker.rescuer, "rescue", rescue_then_stop)
    monkeypatch.setattr(worker.maintenance, "dead_letter_cancelled", dead_letter_cancelled)
    try:
        await worker.maintenance.run_once(stopping, own_jobs=False)
    finally:
        await worker.engine.dispose()
    assert done == ["rescue"]


async def test_a_stopping_recorder_deletes_at_once_without_waiting_for_a_batch(
    engine: AsyncEngine,
) -> None:
    """The shutdown wakes the recorder: the last successes are deleted now, not after
    `max_delay` (here far longer than the test may take)."""
    [job_id] = await add_jobs(engine, enqueue(Noted()))
    store = JobStore(engine)
    [claimed] = await store.claim(worker_id="w", queues=["default"], limit=1)
    recorder = OutcomeRecorder(store, max_delay=timedelta(minutes=10))
    stopping = asyncio.Event()
    recording = asyncio.create_task(recorder.run(stopping))
    await recorder.record("w", claimed.id, Completed())
    await asyncio.sleep(0.1)  # the recorder now waits for its batch to fill
    assert not recording.done()
    stopping.set()
    recorder.wake()
    await asyncio.wait_for(recording, timeout=30)
    assert claimed.id == job_id
    assert await count_jobs(engine) == 0
