"""The store's part for periodic jobs: the database clock, and slots recorded with their jobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.dialects.insert_rows import InsertJobRows
from sqla_jobs.dialects.slots import SlotStatements
from sqla_jobs.enqueue import JobRow


class PeriodicSlotStore:
    """Record periodic slots; mixed into `JobStore`, whose engine it uses."""

    engine: AsyncEngine
    slots: SlotStatements
    _autocommit: AsyncEngine

    async def database_now(self) -> datetime:
        """Return the database's current time."""
        async with self._autocommit.connect() as connection:
            now = await connection.scalar(self.slots.database_now())
        assert now is not None
        return now

    async def latest_slots(self, *, schedules: Sequence[str]) -> dict[str, datetime]:
        """Return the latest recorded slot of each of `schedules` that has one."""
        statement = self.slots.latest_slots(schedules=schedules)
        async with self._autocommit.connect() as connection:
            return {name: slot_at for name, slot_at in await connection.execute(statement)}

    async def enqueue_slot(self, *, schedule: str, slot_at: datetime, row: JobRow) -> bool:
        """Record slot `slot_at` of `schedule` and insert its job `row`, in one transaction.

        Returns False, inserting nothing, when the slot (or a later one) is recorded already:
        another worker enqueued it.
        """
        record = self.slots.insert_slot(
            schedule=schedule, slot_at=slot_at, job_id=uuid.UUID(row.id)
        )
        async with self.engine.begin() as connection:
            # The slot row first: until this transaction ends, it holds the slot's key, so the
            # job is inserted by whichever transaction recorded the slot, and by no other.
            if (await connection.execute(record)).rowcount != 1:
                return False
            await connection.execute(InsertJobRows([row], run_at=None, delay_seconds=None))
            return True

    async def prune_slots(self, *, schedules: Sequence[str], before: datetime) -> int:
        """Delete the slots of `schedules` older than `before` but each one's latest."""
        statement = self.slots.prune_slots(schedules=schedules, before=before)
        async with self._autocommit.connect() as connection:
            return (await connection.execute(statement)).rowcount
