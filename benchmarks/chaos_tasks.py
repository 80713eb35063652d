"""Tasks of the chaos soak (``chaos_soak.py``); importable by its worker processes.

Every kind notes each attempt in ``soak_attempt`` (event ``start``, with the process id) in a
transaction of its own, so attempts cut short by a SIGKILL still count; an attempt that raises
notes ``failed``. `SoakTransactional` then writes its ``soak_app_row`` through
`ctx.transaction()`, which completes the job in the same commit. `SoakLong` sleeps longer than
the heartbeat timeout and notes ``end`` when it is done (its completion is written afterwards,
by the worker: a job whose lease was taken from a live worker would end twice).

The notes go through ``$SOAK_LEDGER_URL`` (the soak's own login), so no role's connection limit
refuses them. In the worker given ``$SOAK_HOG_URL`` (a connection-limited role's URL), each
`SoakLong` first opens connections as that role until the server refuses one (noting
``exhausted``) and holds them while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import cache

import asyncpg
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import JobContext, Task
from sqla_jobs.engine import create_engine

SOAK_QUEUE = "soak"
# Kills are failed attempts: never run out of retries, never wait long for the next one.
MAX_RETRIES = 1_000
BACKOFF = timedelta(milliseconds=500)
LEDGER_URL_ENV_VAR = "SOAK_LEDGER_URL"
HOG_URL_ENV_VAR = "SOAK_HOG_URL"
# Far above any limit worth setting: the role refuses long before.
MAX_HOGGED = 50

soak_metadata = MetaData()
attempts = Table(
    "soak_attempt",
    soak_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("key", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("pid", Integer, nullable=False),
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
    url = os.environ.get(LEDGER_URL_ENV_VAR) or os.environ["SQLA_JOBS_DATABASE_URL"]
    return create_engine(url, pool_size=4, max_overflow=0)


async def note_attempt(key: int, kind: str, event: str = "start") -> None:
    """Record `event` of an attempt of job `key` in this process, committed at once."""
    async with _engine().begin() as connection:
        await connection.execute(
            insert(attempts).values(key=key, kind=kind, event=event, pid=os.getpid())
        )


@contextlib.asynccontextmanager
async def hogged_connections(key: int) -> AsyncIterator[None]:
    """Hold connections as the role of ``$SOAK_HOG_URL`` until one is refused (if it is set)."""
    url = os.environ.get(HOG_URL_ENV_VAR)
    held: list[asyncpg.Connection] = []
    try:
        while url and len(held) < MAX_HOGGED:
            try:
                held.append(await asyncpg.connect(url, timeout=10))
            except asyncpg.TooManyConnectionsError:
                await note_attempt(key, "long", "exhausted")
                break
        yield
    finally:
        for connection in held:
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)


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
        try:
            async with ctx.transaction() as session:
                await session.execute(insert(app_rows).values(key=self.key))
        except Exception:
            await note_attempt(self.key, "transactional", "failed")
            raise


class SoakLong(
    Task,
    name="soak.long",
    queue=SOAK_QUEUE,
    max_retries=MAX_RETRIES,
    backoff=lambda error_count: BACKOFF,
):
    """Longer than a heartbeat timeout: a live worker keeps it; it ends once, bar kills."""

    key: int
    seconds: float

    async def run(self, ctx: JobContext) -> None:
        await note_attempt(self.key, "long")
        try:
            async with hogged_connections(self.key):
                await asyncio.sleep(self.seconds)
        except Exception:
            await note_attempt(self.key, "long", "failed")
            raise
        await note_attempt(self.key, "long", "end")
