"""Tasks of the long-jobs fault test (``--import`` this module): jobs longer than a lease timeout.

`LongJob` writes ``started`` and ``finished`` into the ledger of ``tests.cli_tasks`` (as
postgres, whose connections no role limit counts) around a sleep of `seconds`. In a worker
process started with ``HOG_URL`` (a connection-limited role's URL), it first opens and holds
connections as that role until the server refuses one ("too many connections for role"),
writes ``exhausted``, and at the end of its sleep, still holding them, writes ``renewed`` if
its worker's heartbeat moved on meanwhile: the lease was renewed while the role had no
connection left to give.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from functools import cache

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import JobContext, Task
from sqla_jobs.engine import create_engine
from sqla_jobs.models import WorkerRecord
from tests.cli_tasks import write

HOG_URL_ENV_VAR = "HOG_URL"
# Far above any limit the test sets: a limit that is never reached fails the test, not this loop.
MAX_HOGGED = 50


class LongJob(
    Task,
    name="tests.faults.long_job",
    # A rescued attempt ("worker lost") runs again at once, not after the default 2 s backoff.
    backoff=lambda error_count: timedelta(milliseconds=100),
):
    key: str
    seconds: float

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "started")
        hog_url = os.environ.get(HOG_URL_ENV_VAR)
        if hog_url is None:
            await asyncio.sleep(self.seconds)
        else:
            async with _hogged_connections(hog_url, self.key):
                before = await _heartbeat_at(ctx.worker_id)
                await asyncio.sleep(self.seconds)
                after = await _heartbeat_at(ctx.worker_id)
                if before is not None and after is not None and after > before:
                    await write(self.key, "renewed")
        await write(self.key, "finished")


@contextlib.asynccontextmanager
async def _hogged_connections(url: str, key: str) -> AsyncIterator[None]:
    """Open connections to `url` until one is refused; hold them; close them at the end."""
    held: list[asyncpg.Connection] = []
    try:
        for _ in range(MAX_HOGGED):
            try:
                held.append(await asyncpg.connect(url, timeout=10))
            except asyncpg.TooManyConnectionsError:
                await write(key, "exhausted")
                break
        yield
    finally:
        for connection in held:
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)


@cache
def _engine() -> AsyncEngine:
    # The test's own login (postgres), as the ledger's: no role limit counts these connections.
    return create_engine(os.environ["SQLA_JOBS_DATABASE_URL"])


async def _heartbeat_at(worker_id: str) -> datetime | None:
    """Return the last renewal of `worker_id`'s lease (None: it has no registration)."""
    async with _engine().connect() as connection:
        query = select(WorkerRecord.heartbeat_at).where(WorkerRecord.id == worker_id)
        return await connection.scalar(query)
