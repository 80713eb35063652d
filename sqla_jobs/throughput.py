"""Throughput: how many jobs finished each minute, per queue, read from the per-minute counts.

Workers add what they finished to the table `sqla_jobs_minute_count` once a minute (and when
they stop), so the last minute or so may not be there yet; they delete minutes older than
`RETENTION`. A minute in which no job of a queue finished has no row for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs.dialects.minute_counts import select_throughput

RETENTION = timedelta(hours=48)
"""How long workers keep the per-minute counts."""
MAX_MINUTES = int(RETENTION.total_seconds()) // 60


@dataclass(frozen=True, slots=True)
class MinuteThroughput:
    """The jobs of one queue that finished in one minute, on every worker."""

    minute: datetime
    """The minute's start (UTC)."""
    queue: str
    succeeded: int
    failed: int
    """Failed attempts: retried, dead-lettered after failing, or rescued from a dead worker."""
    dead: int
    """Moved to the dead-letter table (retries spent, discarded, too many snoozes)."""
    snoozed: int
    cancelled: int
    duration_seconds: float
    """The run times of those jobs, added up."""

    @property
    def failure_rate(self) -> float:
        """Failed attempts among the attempts that succeeded or failed (0 without any)."""
        attempts = self.succeeded + self.failed
        return self.failed / attempts if attempts else 0.0


def throughput_statement(*, minutes: int = 60) -> Select[tuple[object, ...]]:
    """Return the SELECT behind `throughput`, for a sync `Session` (`session.execute(...)`)."""
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be an int between 1 and {MAX_MINUTES}, not {minutes!r}")
    return select_throughput(minutes=minutes)


async def throughput(session: AsyncSession, *, minutes: int = 60) -> list[MinuteThroughput]:
    """Return the jobs finished per minute and queue over the last `minutes` minutes (the
    current one included), oldest first, by the database's clock.

    >>> for row in await throughput(session, minutes=60):
    ...     print(row.minute, row.queue, row.succeeded, row.failed, f"{row.failure_rate:.0%}")
    """
    result = await session.execute(throughput_statement(minutes=minutes))
    return [
        MinuteThroughput(
            minute=row.minute,
            queue=row.queue,
            succeeded=int(row.succeeded),
            failed=int(row.failed),
            dead=int(row.dead),
            snoozed=int(row.snoozed),
            cancelled=int(row.cancelled),
            duration_seconds=float(row.duration_seconds or 0.0),
        )
        for row in result
    ]
