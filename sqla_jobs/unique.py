"""Unique jobs: `enqueue_unique()` inserts a job unless one with the same key already exists.

The key is held by the job's row, through a partial unique index on (name, unique_key): while
the job is queued, scheduled, retrying or running. Once it completes (its row is deleted) or is
dead-lettered (moved to the dead-letter table, which keeps the key for inspection only), a new
job with the same key may be enqueued. The insert is ``INSERT ... ON CONFLICT DO NOTHING``, so
concurrent transactions racing on one key leave exactly one job, never an error.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, String, Text, Uuid, cast, literal, select
from sqlalchemy.sql.elements import ColumnElement

from .clock import UTCDateTime, db_insert_time_plus, db_now, db_time_bucket
from .dialects.insert_rows import JOB_ROW_COLUMNS
from .dialects.insert_unless_taken import InsertJobsUnlessTaken
from .enqueue import Overrides, Schedule, job_row
from .errors import EnqueueError
from .ids import new_job_id
from .models import Job
from .tasks import Task

MAX_KEY_BYTES = 1000
"""The longest `key=` in bytes of UTF-8: the index entry must fit a PostgreSQL B-tree page."""

_COLUMNS = (*JOB_ROW_COLUMNS, "unique_key")


def enqueue_unique(
    task: Task,
    *,
    key: str | None = None,
    unique_for: timedelta | None = None,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
    max_payload_bytes: int | None = None,
    timeout: timedelta | None = None,
) -> InsertJobsUnlessTaken:
    """Return an INSERT of a job running `task`, unless a job of this task holds the same key.

    Execute it in your transaction; its result's ``rowcount`` is 1 if the job was inserted,
    0 if an equal job already exists (queued, scheduled, retrying or running; a completed or
    dead-lettered job holds no key). The key is the SHA-256 of the payload's canonical JSON
    (keys sorted) unless `key` gives one; keys are per task. With `unique_for`, a whole number
    of seconds, the key holds within one period of the database's clock, aligned on the Unix
    epoch (``unique_for=timedelta(hours=1)``: once per hour, from the hour, UTC). The other
    options mean what they mean for `enqueue()`. `statement.job_id` is the new job's id.

    >>> result = await session.execute(enqueue_unique(Report(day="2026-11-29")))
    >>> result.rowcount  # 0: that report is already queued
    """
    if not isinstance(task, Task):
        raise EnqueueError(f"enqueue_unique() takes a Task instance, not {type(task).__name__}")
    overrides = Overrides.checked(
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
    )
    schedule = Schedule.checked(run_at, delay)
    period = _check_unique_for(unique_for)
    job_id = new_job_id()
    row = job_row(task, overrides, job_id.hex)
    payload = json.loads(row.payload)
    unique_key: ColumnElement[str] = literal(
        payload_key(payload) if key is None else _check_key(key), Text()
    )
    if period is not None:
        # The database's clock picks the period, so every process agrees on it.
        unique_key = unique_key + "@" + cast(db_time_bucket(period), String())
    rows = select(
        literal(job_id, Uuid()),
        literal(row.name, String()),
        literal(payload, Job.__table__.c.payload.type),
        literal(row.queue, String()),
        literal(row.priority, Integer()),
        literal(row.context, Text()),
        literal(row.timeout_seconds, Float()),
        literal(0, Integer()),
        _due_at(schedule),
        unique_key,
    )
    return InsertJobsUnlessTaken(_COLUMNS, rows, on_unique_key=True, job_id=job_id)


def payload_key(payload: Any) -> str:
    """Return the default unique key of a payload: the SHA-256 of its canonical JSON, in hex.

    Canonical: keys sorted, no whitespace, text as is (not escaped), so equal payloads give
    equal keys whatever the order of their fields.
    """
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _due_at(schedule: Schedule) -> ColumnElement[datetime]:
    if schedule.run_at is not None:
        return literal(schedule.run_at, UTCDateTime())
    if schedule.delay is not None:
        return db_insert_time_plus(schedule.delay.total_seconds())
    return db_now()


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise EnqueueError("key must be a non-empty string")
    if "\x00" in key:
        raise EnqueueError("key must contain no NUL character")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise EnqueueError("key must be valid Unicode text (no lone surrogates)") from None
    if size > MAX_KEY_BYTES:
        raise EnqueueError(f"key is {size} bytes of UTF-8, over the limit of {MAX_KEY_BYTES}")
    return key


def _check_unique_for(unique_for: object) -> int | None:
    if unique_for is None:
        return None
    if not isinstance(unique_for, timedelta) or unique_for < timedelta(seconds=1):
        raise EnqueueError("unique_for must be a timedelta of at least 1 second")
    seconds = unique_for.total_seconds()
    if seconds != int(seconds):
        raise EnqueueError("unique_for must be a whole number of seconds")
    return int(seconds)
