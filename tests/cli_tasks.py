"""Tasks for worker processes started by the tests (``--import tests.cli_tasks``).

Each writes what it did into a ledger table of the test's database, so the test can count
exactly how often every job ran, and in which process.
"""

from __future__ import annotations

import asyncio
import os
import time
from functools import cache

from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import JobContext, Task
from sqla_jobs.engine import create_engine

ledger_metadata = MetaData()
ledger = Table(
    "test_ledger",
    ledger_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("pid", Integer, nullable=False),
)

spans = Table(
    "test_spans",
    ledger_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    # time.time() of the one host the test's processes share.
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
)


@cache
def _engine() -> AsyncEngine:
    # One engine per worker process, on the database the worker itself serves.
    return create_engine(os.environ["SQLA_JOBS_DATABASE_URL"])


async def write(key: str, event: str) -> None:
    """Append one ledger line in its own transaction."""
    async with _engine().begin() as connection:
        await connection.execute(insert(ledger).values(key=key, event=event, pid=os.getpid()))


async def count(key: str, event: str) -> int:
    """Count the ledger lines of `key` and `event`."""
    async with _engine().connect() as connection:
        query = select(func.count()).where(ledger.c.key == key, ledger.c.event == event)
        return (await connection.scalar(query)) or 0


class Note(Task, name="tests.cli.note"):
    key: str

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "ran")


class Slow(Task, name="tests.cli.slow"):
    key: str
    seconds: float

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "started")
        await asyncio.sleep(self.seconds)
        await write(self.key, "finished")


class HangOnce(Task, name="tests.cli.hang_once"):
    """Hang on the first attempt (the test kills the worker), finish on the next."""

    key: str

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "started")
        if await count(self.key, "started") == 1:
            await asyncio.sleep(300)
        await write(self.key, "finished")


class Timed(Task, name="tests.cli.timed", queue="payments"):
    """Sleep, then record when the job's code started and finished."""

    key: str
    seconds: float

    async def run(self, ctx: JobContext) -> None:
        started_at = time.time()
        await asyncio.sleep(self.seconds)
        finished_at = time.time()
        async with _engine().begin() as connection:
            await connection.execute(
                insert(spans).values(
                    key=self.key, pid=os.getpid(), started_at=started_at, finished_at=finished_at
                )
            )
