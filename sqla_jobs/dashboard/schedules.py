"""The schedules page: declared periodic schedules, their next runs and their last slots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from sqla_jobs.dialects.slots import SlotStatements
from sqla_jobs.models import PeriodicSlot
from sqla_jobs.periodic import Periodic
from sqla_jobs.periodic_listing import registered_schedules

from .state import dashboard_of, render

NEXT_RUNS_SHOWN = 3


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule as the page shows it; only `name` and `last_slot_at` when not declared here."""

    name: str
    last_slot_at: datetime | None
    task_name: str | None = None
    description: str | None = None
    timezone: str | None = None
    next_runs: list[datetime] = field(default_factory=list)


async def schedules_page(request: Request) -> Response:
    """Show every schedule declared in this process or recorded in the slots table."""
    declared = registered_schedules()
    async with dashboard_of(request).session() as session:
        dialect = session.get_bind().dialect.name
        # Schedules that ran but are not imported here still show, with their last slot.
        recorded = (await session.scalars(select(PeriodicSlot.schedule).distinct())).all()
        names = sorted({*declared, *recorded})
        statement = SlotStatements(dialect).latest_slots(schedules=names)
        latest = dict((await session.execute(statement)).all()) if names else {}
    now = datetime.now(UTC)
    rows = [_row(name, declared.get(name), latest.get(name), now) for name in names]
    return render(request, "schedules.html", {"active": "schedules", "rows": rows})


def _row(
    name: str, schedule: Periodic | None, last_slot_at: datetime | None, now: datetime
) -> ScheduleRow:
    if schedule is None:
        return ScheduleRow(name=name, last_slot_at=last_slot_at)
    next_runs: list[datetime] = []
    instant: datetime | None = now
    while instant is not None and len(next_runs) < NEXT_RUNS_SHOWN:
        instant = schedule.next_after(instant)
        if instant is not None:
            next_runs.append(instant.astimezone(schedule.zone))
    return ScheduleRow(
        name=name,
        last_slot_at=last_slot_at,
        task_name=schedule.task_name,
        description=schedule.describe(),
        timezone=schedule.timezone,
        next_runs=next_runs,
    )
