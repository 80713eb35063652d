"""Turn Tasks into job rows.

`enqueue()` returns an unsaved `Job` for the caller's session; `enqueue_many()` yields bulk
INSERT statements for the caller to execute; `sqla_jobs.bulk.enqueue_bulk()` copies rows over
the caller's connection. All three build rows with `job_rows`, so they accept and refuse the
same tasks and options.

Owns the rows themselves (`JobRow`, `job_row`, `job_row_chunks`) and their ids; the per-call
options are `sqla_jobs.enqueue_options` (`Schedule`, `Overrides`) and the payload's JSON is
`sqla_jobs.payload` (`encode_payload`), both re-exported here for existing importers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Executable

from .clock import db_insert_time_plus
from .dialects.insert_rows import InsertJobRows
from .enqueue_options import Overrides as Overrides
from .enqueue_options import Schedule as Schedule
from .errors import EnqueueError
from .ids import new_job_id, new_job_id_hexes
from .models import Job
from .payload import encode_payload as encode_payload
from .tasks import Task, is_concrete

_observer: Callable[[Job], None] | None = None


def observe_enqueue(observer: Callable[[Job], None] | None) -> None:
    """Have `observer` see (and complete) each job `enqueue()` returns; None stops it.

    What `sqla_jobs.tracing.instrument()` uses to store the producer span's context on the job.
    """
    global _observer
    _observer = observer


class JobRow(NamedTuple):
    """The values of a new job row that depend on its task; `payload` is JSON text."""

    id: str
    """A random (version 4) UUID as 32 hex digits, which every driver takes for a UUID."""
    name: str
    payload: str
    queue: str
    priority: int
    context: str
    timeout_seconds: float | None


def enqueue(
    task: Task,
    *,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
    max_payload_bytes: int | None = None,
    timeout: timedelta | None = None,
) -> Job:
    """Return a new, unsaved `Job` that runs `task`; add it to your session to enqueue it.

    No I/O happens here: the job exists once the caller's transaction commits, and never if it
    rolls back. `run_at` (timezone-aware) defers the job to that instant; `delay` to that long
    after the INSERT, by the database's clock (not the start of the caller's transaction).
    `priority`, `queue`, `max_payload_bytes` and `timeout` override the task's options. A
    payload JSON cannot hold (NaN, infinities, NUL, text that is not valid Unicode) or one
    larger than `max_payload_bytes` raises `PayloadError`.

    >>> session.add(enqueue(SendEmail(to="a@example.com"), delay=timedelta(minutes=5)))
    """
    if not isinstance(task, Task):
        raise EnqueueError(f"enqueue() takes a Task instance, not {type(task).__name__}")
    overrides = Overrides.checked(
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
    )
    schedule = Schedule.checked(run_at, delay)
    job_id = new_job_id()
    row = job_row(task, overrides, job_id.hex)
    job = Job(
        id=job_id,
        name=row.name,
        payload=json.loads(row.payload),
        queue=row.queue,
        priority=row.priority,
        context=row.context,
        error_count=0,
        timeout_seconds=row.timeout_seconds,
    )
    if schedule.run_at is not None:
        job.run_at = schedule.run_at
    elif schedule.delay is not None:
        # A SQL expression the flush evaluates, so the delay counts from the insert itself.
        job.run_at = db_insert_time_plus(schedule.delay.total_seconds())
    if _observer is not None:
        _observer(job)
    return job


def enqueue_many(
    tasks: Iterable[Task],
    *,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
    max_payload_bytes: int | None = None,
    timeout: timedelta | None = None,
    chunk_size: int = 1000,
) -> Iterator[Executable]:
    """Yield one bulk INSERT per `chunk_size` tasks; execute each in your transaction.

    The options mean what they mean for `enqueue()` and apply to every task. `tasks` is read
    lazily, one chunk at a time, so any number of jobs fits in bounded memory. Every task of a
    chunk is validated before its statement is yielded: a bad one raises `EnqueueError` (or
    `PayloadError`) naming its index, and nothing of its chunk reaches the database. As with
    `enqueue()`, the jobs exist once the caller's transaction commits. `enqueue_bulk()` does
    the same in one call, several times faster on PostgreSQL.

    >>> for statement in enqueue_many(SendEmail(to=a) for a in addresses):
    ...     session.execute(statement)  # `await session.execute(...)` on an AsyncSession
    >>> session.commit()
    """
    chunks, schedule = job_row_chunks(
        "enqueue_many",
        tasks,
        run_at=run_at,
        delay=delay,
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
        chunk_size=chunk_size,
    )
    delay_seconds = None if schedule.delay is None else schedule.delay.total_seconds()
    return (
        InsertJobRows(chunk, run_at=schedule.run_at, delay_seconds=delay_seconds)
        for chunk in chunks
    )


def job_row_chunks(
    caller: str,
    tasks: Iterable[Task],
    *,
    run_at: object,
    delay: object,
    priority: object,
    queue: object,
    context: object,
    max_payload_bytes: object,
    timeout: object,
    chunk_size: object,
) -> tuple[Iterator[list[JobRow]], Schedule]:
    """Check the options of a bulk enqueue now; return its rows, lazily, in checked chunks.

    A whole chunk is built (and so validated) before it is yielded; a bad task raises naming
    its index in `tasks`.
    """
    if isinstance(tasks, Task):
        raise EnqueueError(f"{caller}() takes an iterable of Tasks; use enqueue() for one")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise EnqueueError("chunk_size must be an int of at least 1")
    # Checked here, so a bad option raises at the call rather than at the first chunk.
    schedule = Schedule.checked(run_at, delay)
    overrides = Overrides.checked(
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
    )
    rows = _rows(caller, tasks, overrides)
    return iter(lambda: list(itertools.islice(rows, chunk_size)), []), schedule


def _rows(caller: str, tasks: Iterable[Task], overrides: Overrides) -> Iterator[JobRow]:
    for index, (task, job_id) in enumerate(zip(tasks, new_job_id_hexes(), strict=False)):
        try:
            if not isinstance(task, Task):
                raise EnqueueError(f"{caller}() takes Tasks, not {type(task).__name__}")
            yield job_row(task, overrides, job_id)
        except EnqueueError as exc:
            raise type(exc)(f"tasks[{index}]: {exc}") from exc


def job_row(task: Task, overrides: Overrides, job_id: str) -> JobRow:
    """Return the row of a new job `job_id` running `task` (its options were checked when its
    class was created, the overrides when they were given)."""
    task_class = type(task)
    if not is_concrete(task_class):
        raise EnqueueError(f"{task_class.__qualname__} does not implement run()")
    options = task_class.__task_options__
    return JobRow(
        job_id,
        options.name,
        encode_payload(task, max_bytes=overrides.max_payload_bytes or options.max_payload_bytes),
        options.queue if overrides.queue is None else overrides.queue,
        options.priority if overrides.priority is None else overrides.priority,
        overrides.context,
        overrides.timeout_seconds,
    )
