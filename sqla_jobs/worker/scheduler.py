"""The scheduler: enqueue the jobs of periodic schedules, each slot once across every worker.

Every worker runs it for its schedules; there is no leader. At each slot (by the database's
clock) every worker's scheduler tries to record the slot and insert its job in one
transaction; the slot row's primary key lets exactly one of those transactions insert (see
`SlotStatements.insert_slot`). A worker that starts resumes each schedule after the latest
slot recorded in the database, so a slot missed while no worker ran is subject to the
schedule's catch-up policy (`Periodic.slots_to_enqueue`). Old slot rows are pruned, each
schedule keeping its latest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from loguru import logger

from sqla_jobs.periodic import Periodic
from sqla_jobs.store import JobStore
from sqla_jobs.store.retrying import DATABASE_ERRORS, summarize_error

MAX_PAUSE = timedelta(seconds=30)
"""The longest the scheduler sleeps: it then looks again (a schedule's next slot far away)."""
EARLY_WAKE_MARGIN = timedelta(milliseconds=5)
"""Slept past each slot, so that the database's clock has reached it when the worker looks."""
KEEP_SLOTS = timedelta(hours=1)
"""How long slot rows are kept (each schedule's latest is kept however old)."""
PRUNE_INTERVAL = timedelta(minutes=1)


class Scheduler:
    """Enqueue the due slots of `schedules` until stopped; `on_enqueued` after each job."""

    def __init__(
        self,
        store: JobStore,
        *,
        schedules: Sequence[Periodic],
        on_enqueued: Callable[[], None],
    ) -> None:
        self._store = store
        self.schedules = tuple(schedules)
        self._on_enqueued = on_enqueued
        self._handled: dict[str, datetime] = {}
        """Per schedule, the instant up to which its slots were handled (enqueued or not)."""
        self._pruned_at: datetime | None = None
        self.enqueued = 0
        """Jobs this scheduler enqueued since it was made."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Enqueue each slot as it comes due until `stopping` is set."""
        if not self.schedules:
            return
        logger.info("scheduler started", schedules=[s.name for s in self.schedules])
        while not stopping.is_set():
            pause = MAX_PAUSE
            try:
                pause = await self.run_once()
            except DATABASE_ERRORS as exc:
                logger.warning("enqueuing periodic jobs failed", error=summarize_error(str(exc)))
            except Exception as exc:
                logger.opt(exception=exc).error("enqueuing periodic jobs crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause.total_seconds())

    async def run_once(self) -> timedelta:
        """Enqueue the slots due now; return how long until the next one (at most `MAX_PAUSE`)."""
        now = await self._store.database_now()
        if len(self._handled) < len(self.schedules):
            await self._resume(now)
        for schedule in self.schedules:
            for slot_at in schedule.slots_to_enqueue(after=self._handled[schedule.name], now=now):
                await self._enqueue(schedule, slot_at)
                # Past this slot even when another worker enqueued it: it is handled.
                self._handled[schedule.name] = slot_at
            self._handled[schedule.name] = max(self._handled[schedule.name], now)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = now
            await self._store.prune_slots(
                schedules=[s.name for s in self.schedules], before=now - KEEP_SLOTS
            )
        return self._pause(now)

    async def _resume(self, now: datetime) -> None:
        """Start each schedule after its latest recorded slot; a new schedule starts now."""
        names = [s.name for s in self.schedules if s.name not in self._handled]
        latest = await self._store.latest_slots(schedules=names)
        for name in names:
            self._handled[name] = latest.get(name, now)

    async def _enqueue(self, schedule: Periodic, slot_at: datetime) -> None:
        row = schedule.job_row(slot_at)
        if await self._store.enqueue_slot(schedule=schedule.name, slot_at=slot_at, row=row):
            self.enqueued += 1
            logger.info(
                "periodic job enqueued",
                schedule=schedule.name,
                task=row.name,
                slot_at=slot_at.isoformat(),
                job_id=row.id,
            )
            self._on_enqueued()

    def _pause(self, now: datetime) -> timedelta:
        upcoming = [s.next_after(now) for s in self.schedules]
        soonest = min((slot for slot in upcoming if slot is not None), default=None)
        if soonest is None:
            return MAX_PAUSE
        return min(max(soonest - now, timedelta()) + EARLY_WAKE_MARGIN, MAX_PAUSE)
