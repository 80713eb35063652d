"""Tasks for the fault tests' worker processes: poison jobs, and a probe of the clock a job sees.

Imported by ``--import tests.faults.poison_tasks`` into worker processes that also import
``tests.cli_tasks``, whose ledger table every attempt writes to first (as postgres, through
``SQLA_JOBS_DATABASE_URL``), so a test counts the attempts a worker really made.

- The poison jobs raise what an ordinary ``except Exception`` would let through, or kill their
  worker process; each allows one retry, at once, so it reaches the dead-letter table quickly.
- `ClockProbe` records, in its ledger line, what the database says when it runs: whether it was
  due, how far the worker's own clock is from the database's, and how its retry was scheduled.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from functools import cache

from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from sqla_jobs import Job, JobContext, Task
from sqla_jobs.engine import create_engine as create_async_engine
from sqla_jobs.urls import to_sync_url
from tests.cli_tasks import ledger, write

PROBE_BACKOFF = datetime.timedelta(seconds=2)


def immediately(error_count: int) -> datetime.timedelta:
    """Retry at once: the poison jobs need no backoff to prove they end dead-lettered."""
    return datetime.timedelta(0)


def probe_backoff(error_count: int) -> datetime.timedelta:
    return PROBE_BACKOFF


class Interrupt(KeyboardInterrupt):
    """A KeyboardInterrupt raised by a job's own code, not by a signal."""


@cache
def _async_engine() -> AsyncEngine:
    return create_async_engine(os.environ["SQLA_JOBS_DATABASE_URL"])


@cache
def _sync_engine() -> Engine:
    # A sync job runs in a worker thread: the asyncpg engine of tests.cli_tasks belongs to the
    # worker's event loop, so the thread writes its ledger line through psycopg instead.
    return create_engine(to_sync_url(os.environ["SQLA_JOBS_DATABASE_URL"]), poolclass=NullPool)


def write_sync(key: str, event: str) -> None:
    """Append one ledger line in its own transaction, from a thread."""
    with _sync_engine().begin() as connection:
        connection.execute(insert(ledger).values(key=key, event=event, pid=os.getpid()))


class RaisesSystemExit(
    Task, name="tests.faults.poison.system_exit", max_retries=1, backoff=immediately
):
    key: str

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "attempt")
        raise SystemExit(3)


class RaisesSystemExitInThread(
    Task, name="tests.faults.poison.system_exit_in_thread", max_retries=1, backoff=immediately
):
    key: str

    def run(self, ctx: JobContext) -> None:
        write_sync(self.key, "attempt")
        raise SystemExit(3)


class RaisesInterrupt(
    Task, name="tests.faults.poison.interrupt", max_retries=1, backoff=immediately
):
    key: str

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "attempt")
        raise Interrupt("raised by the job")


class RaisesInterruptInThread(
    Task, name="tests.faults.poison.interrupt_in_thread", max_retries=1, backoff=immediately
):
    key: str

    def run(self, ctx: JobContext) -> None:
        write_sync(self.key, "attempt")
        raise Interrupt("raised by the job")


class ExitsProcess(Task, name="tests.faults.poison.os_exit", max_retries=1, backoff=immediately):
    """Kill the worker process mid-job, as a segfaulting extension or an OOM kill would."""

    key: str

    def run(self, ctx: JobContext) -> None:
        write_sync(self.key, "attempt")
        os._exit(1)


class ClockProbe(Task, name="tests.faults.clock.probe", max_retries=1, backoff=probe_backoff):
    """Write a JSON ledger line of what the database says as this attempt starts.

    ``due``: the database's now() >= the row's run_at. ``skew``: the worker's ``time.time()``
    and ``datetime.now()`` minus the database's now(), in seconds. On a retry, ``backoff`` is
    the row's ``run_at - last_failed_at`` and ``failed_in_order`` tells whether
    ``created_at <= last_failed_at <= now()``, all instants as the database wrote them.
    """

    key: str
    fail_first: bool = False

    async def run(self, ctx: JobContext) -> None:
        query = select(Job.run_at, Job.created_at, Job.last_failed_at, func.now()).where(
            Job.id == ctx.job_id
        )
        async with _async_engine().connect() as connection:
            run_at, created_at, last_failed_at, now = (await connection.execute(query)).one()
        # Through the module attributes, so a clock patched before this import is the one read.
        own_now = datetime.datetime.now(datetime.UTC)
        record: dict[str, object] = {
            "attempt": ctx.attempt,
            "due": now >= run_at,
            "skew": time.time() - now.timestamp(),
            "datetime_skew": (own_now - now).total_seconds(),
        }
        if last_failed_at is not None:
            record["backoff"] = (run_at - last_failed_at).total_seconds()
            record["failed_in_order"] = created_at <= last_failed_at <= now
        await write(self.key, json.dumps(record))
        if self.fail_first and ctx.attempt == 1:
            raise RuntimeError("the first attempt fails by design")
