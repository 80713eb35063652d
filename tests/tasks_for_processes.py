"""A task for the worker processes that tests/test_supervisor.py starts with ``--import``.

Only those child processes import this module, so the test process's task registry stays as
the other tests expect it. Each run writes one ledger row (job number, worker pid) to the table
``supervisor_test_ledger`` of the database named by ``SUPERVISOR_TEST_LEDGER_URL``.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import JobContext, Task
from sqla_jobs.engine import create_engine

# tests/test_supervisor.py uses the same names; it does not import this module (see above).
TASK_NAME = "tests.record_pid"
QUEUE = "supervisor_test"
LEDGER_URL_ENV_VAR = "SUPERVISOR_TEST_LEDGER_URL"

RECORD = text("INSERT INTO supervisor_test_ledger (number, pid) VALUES (:number, :pid)")

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
