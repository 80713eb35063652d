"""`python -m sqla_jobs periodic list`: each schedule with its next run times."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from .periodic import CatchUp, Periodic, registered_schedules

__all__ = ["format_schedules", "registered_schedules"]


def format_schedules(schedules: Sequence[Periodic], *, now: datetime, count: int) -> str:
    """Return a listing of `schedules` with the next `count` run times of each after `now`.

    >>> print(format_schedules(list(registered_schedules().values()), now=now, count=3))
    """
    if not schedules:
        return "no periodic schedule is declared (import the modules that declare them)\n"
    lines = []
    for schedule in sorted(schedules, key=lambda s: s.name):
        lines.append(
            f"{schedule.name}  task={schedule.task_name}  {schedule.describe()}  "
            f"timezone={schedule.timezone}  catch_up={_describe_catch_up(schedule.catch_up)}"
        )
        instant: datetime | None = now
        for _ in range(count):
            assert instant is not None
            instant = schedule.next_after(instant)
            if instant is None:
                break
            local = instant.astimezone(schedule.zone)
            lines.append(f"    {local.isoformat()}")
    return "\n".join(lines) + "\n"


def _describe_catch_up(catch_up: CatchUp) -> str:
    return f"window {catch_up}" if isinstance(catch_up, timedelta) else catch_up
