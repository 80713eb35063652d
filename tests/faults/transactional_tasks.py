"""Tasks for worker processes of the exactly-once fault test (``--import`` this module).

`WriteOnce` notes every attempt in the ledger of ``tests.cli_tasks`` (its own transaction, so
an attempt killed midway still counts), then writes its application row through
`ctx.transaction()`, which completes the job in the same commit.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from sqlalchemy import Column, Integer, MetaData, Table, Text, insert

from sqla_jobs import JobContext, Task
from tests.cli_tasks import write

app_metadata = MetaData()
app_rows = Table(
    "test_app_row",
    app_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Deliberately not unique: a duplicate must be counted by the test, not refused here.
    Column("key", Text, nullable=False),
)


class WriteOnce(
    Task,
    name="tests.faults.write_once",
    # Every kill is a failed attempt of the jobs it interrupts: never run out, never wait long.
    max_retries=1_000,
    backoff=lambda error_count: timedelta(milliseconds=50),
):
    key: str

    async def run(self, ctx: JobContext) -> None:
        await write(self.key, "attempt")
        # Random pauses before and inside the transaction, so kills land in every phase.
        await asyncio.sleep(random.uniform(0, 0.2))
        async with ctx.transaction() as session:
            await session.execute(insert(app_rows).values(key=self.key))
            await asyncio.sleep(random.uniform(0, 0.2))
