"""Per-minute job counts: written by workers once a minute and at stop, read by `throughput`."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import JobContext, Task, Worker, enqueue
from sqla_jobs.clock import db_now_plus
from sqla_jobs.context import ClaimedJob
from sqla_jobs.execution import Completed, Retry
from sqla_jobs.models import Base, MinuteCount
from sqla_jobs.store import JobStore
from sqla_jobs.throughput import MinuteThroughput, throughput, throughput_statement
from sqla_jobs.worker import maintenance
from sqla_jobs.worker.minute_counts import prune_minute_counts, write_minute_counts
from sqla_jobs.worker.tally import JobTally
from tests.helpers import TestDatabase

MINUTE_COUNT_TABLE = Base.metadata.tables["sqla_jobs_minute_count"]


class Fine(Task, name="tests.throughput.fine"):
    async def run(self, ctx: JobContext) -> None:
        return None


class Broken(Task, name="tests.throughput.broken", max_retries=0):
    async def run(self, ctx: JobContext) -> None:
        raise RuntimeError("broken")


def make_worker(database: TestDatabase, **options: Any) -> Worker:
    return Worker(
        database.url,
        tasks=[Fine, Broken],
        queues=["default", "mail"],
        handle_signals=False,
        poll_interval=timedelta(milliseconds=50),
        **options,
    )


def claimed(name: str = "tests.throughput.fine", queue: str = "default") -> ClaimedJob:
    now = datetime.now(UTC)
    return ClaimedJob(
        id=uuid.uuid4(),
        name=name,
        payload_json="{}",
        queue=queue,
        priority=0,
        run_at=now,
        created_at=now,
        context="",
        error_count=0,
    )


async def rows(engine: AsyncEngine) -> list[MinuteCount]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(MinuteCount))).all())


async def test_a_worker_counts_what_it_ran_per_minute_queue_and_outcome(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    async with AsyncSession(engine) as session:
        session.add_all([enqueue(Fine()), enqueue(Fine()), enqueue(Fine(), queue="mail")])
        session.add(enqueue(Broken(), queue="mail"))
        await session.commit()
    worker = make_worker(database)
    await worker.run_until_idle()  # the stop writes the counts

    async with AsyncSession(engine) as session:
        result = await throughput(session, minutes=5)
    by_queue = {row.queue: row for row in result}
    assert set(by_queue) == {"default", "mail"}
    assert (by_queue["default"].succeeded, by_queue["default"].failed) == (2, 0)
    mail = by_queue["mail"]
    assert (mail.succeeded, mail.failed, mail.dead) == (1, 1, 1)
    assert mail.failure_rate == 0.5
    assert mail.duration_seconds >= 0
    assert abs(mail.minute - datetime.now(UTC)) < timedelta(minutes=2)
    assert {(r.queue, r.name, r.outcome, r.count) for r in await rows(engine)} == {
        ("default", "tests.throughput.fine", "success", 2),
        ("mail", "tests.throughput.fine", "success", 1),
        ("mail", "tests.throughput.broken", "dead", 1),
    }


async def test_two_workers_counting_one_minute_add_up(engine: AsyncEngine) -> None:
    store = JobStore(engine)
    for outcome in (Completed(), Completed(), Retry(error="x", delay=timedelta(0))):
        tally = JobTally()
        tally.add(claimed(), outcome, time.monotonic(), cancelled=False)
        await write_minute_counts(store, tally)
    async with AsyncSession(engine) as session:
        [row] = await throughput(session)
    assert (row.succeeded, row.failed) == (2, 1)
    assert sorted((r.outcome, r.count) for r in await rows(engine)) == [
        ("retry", 1),
        ("success", 2),
    ]


async def test_counts_that_cannot_be_written_are_kept_for_the_next_write(
    database: TestDatabase, engine: AsyncEngine, log_records: list[Any]
) -> None:
    store = JobStore(engine)
    tally = JobTally()
    tally.add(claimed(), Completed(), time.monotonic(), cancelled=False)
    async with engine.begin() as connection:
        await connection.run_sync(MINUTE_COUNT_TABLE.drop)
    await write_minute_counts(store, tally)
    assert any(
        r["message"] == "writing job counts failed; kept for the next try" for r in log_records
    )
    async with engine.begin() as connection:
        await connection.run_sync(MINUTE_COUNT_TABLE.create)
    await write_minute_counts(store, tally)
    assert [(r.outcome, r.count) for r in await rows(engine)] == [("success", 1)]


async def test_minutes_past_the_retention_are_deleted_and_the_window_is_respected(
    engine: AsyncEngine,
) -> None:
    def row(minutes_ago: float, queue: str) -> dict[str, Any]:
        return {
            "minute": db_now_plus(-60 * minutes_ago),
            "queue": queue,
            "name": "t",
            "outcome": "success",
            "count": 1,
            "duration_seconds": 0.5,
        }

    async with engine.begin() as connection:
        for values in (row(0, "now"), row(90, "hour_and_half"), row(49 * 60, "two_days")):
            await connection.execute(insert(MinuteCount).values(values))
    await prune_minute_counts(JobStore(engine))
    assert sorted(r.queue for r in await rows(engine)) == ["hour_and_half", "now"]
    async with AsyncSession(engine) as session:
        assert [r.queue for r in await throughput(session)] == ["now"]
        assert [r.queue for r in await throughput(session, minutes=120)] == [
            "hour_and_half",
            "now",
        ]


@pytest.mark.parametrize("minutes", [0, -1, 48 * 60 + 1, 1.5, True])
def test_a_window_outside_the_retention_is_refused(minutes: Any) -> None:
    with pytest.raises(ValueError, match="minutes must be an int between 1 and 2880"):
        throughput_statement(minutes=minutes)


async def test_the_summary_line_reports_what_the_counts_hold(
    database: TestDatabase,
    engine: AsyncEngine,
    log_records: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(maintenance, "SUMMARY_INTERVAL", timedelta(0))
    worker = make_worker(database)
    worker.runner.tally.add(claimed(), Completed(), time.monotonic(), cancelled=False)
    await worker.maintenance.summarise()
    [summary] = [r["extra"] for r in log_records if r["message"] == "jobs finished"]
    assert summary["success"] == 1
    assert [(r.outcome, r.count) for r in await rows(engine)] == [("success", 1)]
    await worker.maintenance.summarise()  # nothing new: no line, no write
    assert len([r for r in log_records if r["message"] == "jobs finished"]) == 1
    await worker.engine.dispose()


def test_minute_throughput_without_attempts_has_no_failure_rate() -> None:
    row = MinuteThroughput(datetime.now(UTC), "q", 0, 0, 0, 3, 0, 0.0)
    assert row.failure_rate == 0.0
