"""A task for the worker processes that tests/test_supervisor.py starts with ``--import``.

Only those child processes import this module, so the test process's task registry stays as
the other tests expect it. Each run of `RecordPid` writes one ledger row (job number, worker
pid) to the table ``supervisor_test_ledger`` of the database named by
``SUPERVISOR_TEST_LEDGER_URL``; `Pause` and `PauseInThread` write their ``started`` and
``finished`` events to ``supervisor_test_events`` there.
"""

from __future__ import annotations

import asyncio
import os
import time
from functools import cache

from sqlalchemy import Engine, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import JobContext, Task
from sqla_jobs.engine import create_engine
from sqla_jobs.urls import to_sync_url

# tests/test_supervisor.py uses the same names; it does not import this module (see above).
TASK_NAME = "tests.record_pid"
QUEUE = "supervisor_test"
LEDGER_URL_ENV_VAR = "SUPERVISOR_TEST_LEDGER_URL"

RECORD = text("INSERT INTO supervisor_test_ledger (number, pid) VALUES (:number, :pid)")
EVENT = text("INSERT INTO supervisor_test_events (key, event, pid) VALUES (:key, :event, :pid)")

_engine: AsyncEngine | None = None


class RecordPid(Task, name=TASK_NAME, queue=QUEUE):
    """Record which process ran job `number`, after a short pause."""

    number: int

    async def run(self, ctx: JobContext) -> None:
        # Long enough that one process cannot drain the queue before the other claims.
        await asyncio.sleep(0.01)
        async with _ledger_engine().begin() as connection:
            await connection.execute(RECORD, {"number": self.number, "pid": os.getpid()})


def _ledger_engine() -> AsyncEngine:
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ[LEDGER_URL_ENV_VAR])
    return _engine


class Pause(Task, name="tests.pause", queue=QUEUE):
    """An async job that runs for `seconds`, recording when it started and finished."""

    key: str
    seconds: float

    async def run(self, ctx: JobContext) -> None:
        await _write_event(self.key, "started")
        await asyncio.sleep(self.seconds)
        await _write_event(self.key, "finished")


class PauseInThread(Task, name="tests.pause_in_thread", queue=QUEUE):
    """A plain ``def run`` job (a thread nothing can stop) that runs for `seconds`."""

    key: str
    seconds: float

    def run(self, ctx: JobContext) -> None:
        self._write("started")
        time.sleep(self.seconds)
        self._write("finished")

    def _write(self, event: str) -> None:
        with _sync_ledger_engine().begin() as connection:
            connection.execute(EVENT, {"key": self.key, "event": event, "pid": os.getpid()})


async def _write_event(key: str, event: str) -> None:
    async with _ledger_engine().begin() as connection:
        await connection.execute(EVENT, {"key": key, "event": event, "pid": os.getpid()})


@cache
def _sync_ledger_engine() -> Engine:
    return create_sync_engine(to_sync_url(os.environ[LEDGER_URL_ENV_VAR]))
