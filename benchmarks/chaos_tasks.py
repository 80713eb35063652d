"""Tasks of the chaos soak (``chaos_soak.py``); importable by its worker processes.

Both kinds note each attempt in ``soak_attempt`` in a transaction of its own, so attempts cut
short by a SIGKILL still count. `SoakTransactional` then writes its ``soak_app_row`` through
`ctx.transaction()`, which completes the job in the same commit.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cache

from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import JobContext, Task
from sqla_jobs.engine import create_engine

SOAK_QUEUE = "soak"
# Kills are failed attempts: never run out of retries, never wait long for the next one.
MAX_RETRIES = 1_000
BACKOFF = timedelta(milliseconds=500)

soak_metadata = MetaData()
attempts = Table(
    "soak_attempt",
    soak_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("key", Integer, nullable=False),
    Column("kind", Text, nullable=False),
)
app_rows = Table(
    "soak_app_row",
    soak_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    # Not unique on purpose: the soak counts duplicates instead of having them refused.
    Column("key", Integer, nullable=False),
)


@cache
def _engine() -> AsyncEngine:
    # A small pool of its own per worker process: the shared server has 100 connections.
    return create_engine(os.environ["SQLA_JOBS_DATABASE_URL"], pool_size=4, max_overflow=0)


async def note_attempt(key: int, kind: str) -> None:
    """Record one attempt of job `key`, committed at once."""
    async with _engine().begin() as connection:
        await connection.execute(insert(attempts).values(key=key, kind=kind))


class SoakPlain(
    Task,
    name="soak.plain",
    queue=SOAK_QUEUE,
    max_retries=MAX_RETRIES,
    backoff=lambda error_count: BACKOFF,
):
    """At-least-once: every run leaves an attempt row, reruns included."""

    key: int

    async def run(self, ctx: JobContext) -> None:
        await note_attempt(self.key, "plain")


class SoakTransactional(
    Task,
    name="soak.transactional",
    queue=SOAK_QUEUE,
    max_retries=MAX_RETRIES,
    backoff=lambda error_count: BACKOFF,
):
    """Exactly-once writes: the app row commits with the job's completion, or not at all."""

    key: int

    async def run(self, ctx: JobContext) -> None:
        await note_attempt(self.key, "transactional")
        async with ctx.transaction() as session:
            await session.execute(insert(app_rows).values(key=self.key))
