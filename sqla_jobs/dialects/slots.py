"""Statements of periodic schedules: record a slot once, read the latest slots, prune old ones.

The slot insert is ``INSERT ... SELECT ... WHERE NOT EXISTS (a slot as late) ON CONFLICT DO
NOTHING``, whose SQL both dialects share but whose ``ON CONFLICT`` construct each dialect
module has its own of; the rest is plain SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Delete, Insert, Select, String, Uuid, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from sqla_jobs.clock import UTCDateTime, db_now
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.models import PeriodicSlot


class SlotStatements:
    """Build the statements of periodic slots for one SQL dialect."""

    def __init__(self, dialect_name: str) -> None:
        if dialect_name not in ("postgresql", "sqlite"):
            raise ConfigurationError(
                f"sqla_jobs supports PostgreSQL and SQLite, not {dialect_name!r}"
            )
        self._dialect_name = dialect_name

    def insert_slot(self, *, schedule: str, slot_at: datetime, job_id: uuid.UUID) -> Insert:
        """Record slot `slot_at` of `schedule` unless it, or a later slot, is recorded already.

        One row inserted means this transaction owns the slot: insert its job in the same
        transaction. On PostgreSQL a concurrent insert of the same slot waits for this one's
        commit and then inserts nothing (the primary key), so only one transaction ever owns a
        slot; SQLite has one writer at a time. A slot older than the latest recorded one is
        refused too: a worker running late can never bring back a slot that was enqueued and
        then pruned.
        """
        later = (
            select(PeriodicSlot.schedule)
            .where(PeriodicSlot.schedule == schedule, PeriodicSlot.slot_at >= slot_at)
            .exists()
        )
        row = select(
            literal(schedule, String()),
            literal(slot_at, UTCDateTime()),
            literal(job_id, Uuid()),
        ).where(~later)
        columns = [PeriodicSlot.schedule, PeriodicSlot.slot_at, PeriodicSlot.job_id]
        if self._dialect_name == "postgresql":
            return (
                postgresql.insert(PeriodicSlot).from_select(columns, row).on_conflict_do_nothing()
            )
        return sqlite.insert(PeriodicSlot).from_select(columns, row).on_conflict_do_nothing()

    def latest_slots(self, *, schedules: Sequence[str]) -> Select[str, datetime]:
        """Select (schedule, latest recorded slot) of those of `schedules` that have one."""
        return (
            select(PeriodicSlot.schedule, func.max(PeriodicSlot.slot_at))
            .where(PeriodicSlot.schedule.in_(schedules))
            .group_by(PeriodicSlot.schedule)
        )

    def prune_slots(self, *, schedules: Sequence[str], before: datetime) -> Delete:
        """Delete the slots of `schedules` older than `before`, but each schedule's latest.

        The latest slot stays: it is where a worker that starts resumes the schedule.
        """
        newer = aliased(PeriodicSlot)
        latest = (
            select(func.max(newer.slot_at))
            .where(newer.schedule == PeriodicSlot.schedule)
            .scalar_subquery()
        )
        return delete(PeriodicSlot).where(
            PeriodicSlot.schedule.in_(schedules),
            PeriodicSlot.slot_at < before,
            PeriodicSlot.slot_at < latest,
        )

    def database_now(self) -> Select[datetime]:
        """Select the database's current time."""
        return select(db_now())
