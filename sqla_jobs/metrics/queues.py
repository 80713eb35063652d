"""Gauges read from the database at scrape time: due jobs waiting, and how long the oldest has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.clock import db_now
from sqla_jobs.dialects.claim import waiting
from sqla_jobs.models import Job

LABELS = ["queue", "task"]
CACHE_FOR = timedelta(seconds=5)
"""How long one reading serves scrapes: many scrapers (or a dashboard) cost one query."""


def select_due_jobs() -> Select[str, str, int, datetime, datetime]:
    """Select, per queue and task, the due jobs waiting, their earliest `run_at`, and now.

    Waiting is what the claim's partial index holds, so the count reads that index only.
    """
    return (
        select(Job.queue, Job.name, func.count(), func.min(Job.run_at), db_now())
        .where(*waiting(), Job.run_at <= db_now())
        .group_by(Job.queue, Job.name)
    )


class QueueCollector(Collector):
    """Gauges `sqla_jobs_queue_depth` and `sqla_jobs_oldest_due_age_seconds`, per queue and task.

    `collect()` (called by prometheus-client at scrape time) never touches the database: it
    reports the last reading. `refresh()` reads again, at most once per `cache_for`; the
    exposition (`asgi_app`, `MetricsServer`) awaits it before each scrape.
    """

    def __init__(self, engine: AsyncEngine, *, cache_for: timedelta = CACHE_FOR) -> None:
        self._engine = engine
        self._cache_for = cache_for.total_seconds()
        self._read_at: float | None = None
        self._rows: list[tuple[str, str, int, float]] = []
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the gauges from the database, unless the last reading is fresh enough."""
        async with self._lock:
            if self._read_at is not None and time.monotonic() - self._read_at < self._cache_for:
                return
            async with self._engine.connect() as connection:
                result = await connection.execute(select_due_jobs())
                self._rows = [
                    (queue, name, count, _age(now, oldest))
                    for queue, name, count, oldest, now in result
                ]
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauges of the last reading."""
        depth = GaugeMetricFamily(
            "sqla_jobs_queue_depth", "Due jobs waiting to be claimed.", labels=LABELS
        )
        age = GaugeMetricFamily(
            "sqla_jobs_oldest_due_age_seconds",
            "How long the longest-waiting due job has been due.",
            labels=LABELS,
        )
        for queue, name, count, oldest in self._rows:
            depth.add_metric([queue, name], count)
            age.add_metric([queue, name], oldest)
        yield depth
        yield age


def _age(now: Any, oldest: Any) -> float:
    # SQLite hands back text for aggregates (no column type reaches min() or now()).
    now, oldest = _instant(now), _instant(oldest)
    return float(max((now - oldest).total_seconds(), 0.0))


def _instant(value: Any) -> datetime:
    instant = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)
