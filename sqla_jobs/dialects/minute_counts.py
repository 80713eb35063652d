"""Statements of the per-minute job counts: add a worker's counts, forget old minutes, read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import Delete, Insert, Integer, Select, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from sqla_jobs.clock import db_now_plus
from sqla_jobs.models import MinuteCount


class MinuteCountRow(TypedDict):
    """The counts one worker adds to a row of `MinuteCount`."""

    minute: datetime
    queue: str
    name: str
    outcome: str
    count: int
    duration_seconds: float


def add_minute_counts(dialect: str, rows: Sequence[MinuteCountRow]) -> Insert:
    """Return ``INSERT ... ON CONFLICT DO UPDATE`` adding `rows` to the counts already stored.

    One statement: workers adding to the same minute never lose each other's counts.
    """
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(MinuteCount).values(list(rows))
    excluded = statement.excluded
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=[
            MinuteCount.minute,
            MinuteCount.queue,
            MinuteCount.name,
            MinuteCount.outcome,
        ],
        set_={
            "count": MinuteCount.count + excluded.count,
            "duration_seconds": MinuteCount.duration_seconds + excluded.duration_seconds,
        },
    )
    return upsert


def delete_minute_counts(*, older_than: timedelta) -> Delete:
    """Return the deletion of the counts of minutes more than `older_than` ago (database clock)."""
    return delete(MinuteCount).where(MinuteCount.minute < db_now_plus(-older_than.total_seconds()))


FAILED_OUTCOMES = ("retry", "dead", "rescued")
"""The outcomes a failure rate counts: failed attempts (a worker lost while running counts)."""


def _sum_of(*outcomes: str) -> Any:
    return func.coalesce(
        func.sum(case((MinuteCount.outcome.in_(outcomes), MinuteCount.count), else_=0)), 0
    ).cast(Integer)


def select_throughput(*, minutes: int) -> Select[Any]:
    """Select per minute and queue, over the last `minutes` minutes (the current one included):
    minute, queue, succeeded, failed, dead, snoozed, cancelled, total duration in seconds."""
    return (
        select(
            MinuteCount.minute,
            MinuteCount.queue,
            _sum_of("success").label("succeeded"),
            _sum_of(*FAILED_OUTCOMES).label("failed"),
            _sum_of("dead").label("dead"),
            _sum_of("snoozed").label("snoozed"),
            _sum_of("cancelled").label("cancelled"),
            func.sum(MinuteCount.duration_seconds).label("duration_seconds"),
        )
        .where(MinuteCount.minute > db_now_plus(-60.0 * minutes))
        .group_by(MinuteCount.minute, MinuteCount.queue)
        .order_by(MinuteCount.minute, MinuteCount.queue)
    )
