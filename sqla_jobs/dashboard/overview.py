"""The overview page's numbers: per-queue counts, live workers, the last hour's throughput."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs import admin
from sqla_jobs.throughput import MinuteThroughput, throughput

from .chart import MinuteBar, throughput_svg

WINDOW_MINUTES = 60


@dataclass(frozen=True)
class HourTotals:
    """What finished over the last hour, on every queue or on one."""

    succeeded: int = 0
    failed: int = 0
    """Failed attempts (retried, dead-lettered after failing, rescued)."""
    dead: int = 0

    @property
    def failure_rate(self) -> str:
        """Failed attempts among those that succeeded or failed, as a percentage ("—": none)."""
        attempts = self.succeeded + self.failed
        return f"{self.failed / attempts:.1%}" if attempts else "—"

    def add(self, minute: MinuteThroughput) -> HourTotals:
        """Return these totals with `minute`'s counts added."""
        return HourTotals(
            self.succeeded + minute.succeeded, self.failed + minute.failed, self.dead + minute.dead
        )


async def overview_context(session: AsyncSession) -> dict[str, Any]:
    """Return what the overview shows, read in `session` by the database's clock."""
    queues = await admin.queue_stats(session)
    workers = await admin.workers(session)
    minutes = await throughput(session, minutes=WINDOW_MINUTES)
    now = await admin.database_now(session)
    totals = HourTotals()
    by_queue: defaultdict[str, HourTotals] = defaultdict(HourTotals)
    for minute in minutes:
        totals = totals.add(minute)
        by_queue[minute.queue] = by_queue[minute.queue].add(minute)
    # A queue whose jobs all finished has no counts, but has throughput: it is listed too.
    listed = {stats.queue for stats in queues}
    queues += [admin.QueueStats(queue=queue) for queue in sorted(by_queue) if queue not in listed]
    return {
        "queues": queues,
        "live_workers": sum(1 for worker in workers if worker.is_alive),
        "totals": totals,
        "by_queue": by_queue,
        "chart": throughput_svg(minute_bars(minutes, now=now)),
    }


def minute_bars(minutes: Sequence[MinuteThroughput], *, now: datetime) -> list[MinuteBar]:
    """Return one bar per minute of the hour ending at `now`, every queue added up.

    Minutes in which nothing finished have no row; they get an empty bar, so the chart's
    time axis is even.
    """
    current = now.replace(second=0, microsecond=0)
    starts = [current - timedelta(minutes=back) for back in range(WINDOW_MINUTES - 1, -1, -1)]
    succeeded: defaultdict[datetime, int] = defaultdict(int)
    failed: defaultdict[datetime, int] = defaultdict(int)
    for minute in minutes:
        succeeded[minute.minute] += minute.succeeded
        failed[minute.minute] += minute.failed
    return [MinuteBar(start, succeeded[start], failed[start]) for start in starts]
