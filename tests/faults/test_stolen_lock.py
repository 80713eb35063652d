"""A job taken from its worker behind its back cannot be completed, retried or dead-lettered
over the new owner's claim: every write to a claimed row is guarded by ``locked_by``.

Two `Worker`s share one event loop and one database (each dialect in turn). Worker A claims a
job that blocks; the row's lock is then cleared by hand (as a rescue would, while A's lease
still looks alive to A), and worker B claims and runs it too (blocking as well). A's run is
then released first, with each outcome; its write must change nothing, and A must say it lost
the lock. Then B's run ends and B completes the job normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, JobContext, Task, Worker, enqueue
from tests.helpers import TestDatabase, wait_until

if TYPE_CHECKING:
    from loguru import Record

QUEUE = "tests_stolen_lock"


@dataclass
class Gate:
    """A worker's `state`: its runs of `Gated` report here, wait here, then end as told."""

    outcome: Literal["succeed", "fail"]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class Gated(Task, name="tests.faults.stolen_lock.gated", queue=QUEUE):
    async def run(self, ctx: JobContext) -> None:
        gate: Gate = ctx.state
        gate.started.set()
        await gate.release.wait()
        if gate.outcome == "fail":
            raise RuntimeError("failed after its lock was stolen")


def make_worker(database: TestDatabase, gate: Gate, *, max_retries: int) -> Worker:
    return Worker(
        database.url,
        tasks=[Gated],
        concurrency=1,
        state=gate,
        poll_interval=timedelta(milliseconds=50),
        max_retries=max_retries,
        # Both workers live: the heartbeat rescue must stay out of this test.
        heartbeat_timeout=timedelta(minutes=10),
        handle_signals=False,
    )


def is_set(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return event.is_set()

    return predicate


async def job_rows(engine: AsyncEngine) -> list[Job]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(Job))).all())


async def dead_letter_count(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(DeadLetterJob))) or 0


@pytest.mark.parametrize(
    ("outcome", "max_retries"),
    [("succeed", 20), ("fail", 20), ("fail", 0)],
    ids=["complete", "retry", "dead_letter"],
)
async def test_a_worker_whose_lock_was_stolen_cannot_write_over_the_new_claim(
    database: TestDatabase,
    engine: AsyncEngine,
    log_records: list[Record],
    outcome: Literal["succeed", "fail"],
    max_retries: int,
) -> None:
    async with AsyncSession(engine) as session:
        session.add(enqueue(Gated()))
        await session.commit()
    gate_a, gate_b = Gate(outcome), Gate("succeed")
    a = make_worker(database, gate_a, max_retries=max_retries)
    b = make_worker(database, gate_b, max_retries=20)
    runs = [asyncio.create_task(a.run())]
    try:
        await wait_until(is_set(gate_a.started))
        async with engine.begin() as connection:
            await connection.execute(update(Job).values(locked_by=None, locked_at=None))
        # Started only now, so it cannot claim the job first.
        runs.append(asyncio.create_task(b.run()))
        await wait_until(is_set(gate_b.started))
        [row] = await job_rows(engine)
        assert row.locked_by == b.id

        def lock_lost() -> list[Record]:
            return [r for r in log_records if r["message"].startswith("lock lost")]

        async def a_lost_its_lock() -> bool:
            return a.jobs_processed == 1 and bool(lock_lost())

        gate_a.release.set()
        await wait_until(a_lost_its_lock)
        assert all(r["extra"].get("worker_id", a.id) == a.id for r in lock_lost())
        # A's success, retry or dead letter changed nothing: the row is B's, as B claimed it.
        [row] = await job_rows(engine)
        assert (row.locked_by, row.error_count) == (b.id, 0)
        assert (row.last_error_message, row.last_failed_at) == (None, None)
        assert await dead_letter_count(engine) == 0
        assert b.jobs_processed == 0

        gate_b.release.set()

        async def b_completed_it() -> bool:
            return not await job_rows(engine)

        await wait_until(b_completed_it)
        assert await dead_letter_count(engine) == 0
        completed = [r for r in log_records if r["message"] == "job completed"]
        completed_by = [r["extra"].get("worker_id") for r in completed]
        assert b.id in completed_by
        assert len(lock_lost()) == 1, "B lost its lock too, or A reported twice"
    finally:
        # Forced: a failed assertion above may leave a run blocked; none may outlive the test.
        for worker in (a, b):
            worker.stop(force=True)
        await asyncio.wait_for(asyncio.gather(*runs), timeout=30)
