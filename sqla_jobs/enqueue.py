"""Turn Tasks into job rows.

`enqueue()` returns an unsaved `Job` for the caller's session; `enqueue_many()` yields bulk
INSERT statements for the caller to execute; `sqla_jobs.bulk.enqueue_bulk()` copies rows over
the caller's connection. All three build rows with `job_rows`, so they accept and refuse the
same tasks and options.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic_core import PydanticSerializationError
from sqlalchemy import Executable

from .clock import db_insert_time_plus
from .dialects.insert_rows import InsertJobRows
from .errors import EnqueueError, PayloadError
from .models import Job
from .options import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    check_context,
    check_max_payload_bytes,
    check_priority,
    check_queue,
    check_timeout,
)
from .tasks import Task, is_concrete

# A NUL character, as JSON escapes it: "\u0000" after an even number of backslashes (an odd
# number would make it the text "\u0000", which is fine).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


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
    job_id = uuid.uuid4()
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
    for index, (task, job_id) in enumerate(zip(tasks, _random_ids(), strict=False)):
        try:
            if not isinstance(task, Task):
                raise EnqueueError(f"{caller}() takes Tasks, not {type(task).__name__}")
            yield job_row(task, overrides, job_id)
        except EnqueueError as exc:
            raise type(exc)(f"tasks[{index}]: {exc}") from exc


_UUID4_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_BITS = (4 << 76) | (0x2 << 62)


def _random_ids(batch: int = 1024) -> Iterator[str]:
    """Yield random version 4 UUIDs as hex, reading the OS's randomness a batch at a time.

    `uuid.uuid4()` makes one system call and one `UUID` object per id: a third of the Python
    time of a bulk enqueue.
    """
    while True:
        randomness = os.urandom(16 * batch)
        for start in range(0, 16 * batch, 16):
            value = int.from_bytes(randomness[start : start + 16])
            yield f"{(value & _UUID4_MASK) | _UUID4_BITS:032x}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """When new jobs are due: at `run_at`, `delay` after their insert, or (neither) at once."""

    run_at: datetime | None
    delay: timedelta | None

    @classmethod
    def checked(cls, run_at: object, delay: object) -> Schedule:
        if run_at is not None and delay is not None:
            raise EnqueueError("pass run_at or delay, not both")
        return cls(
            run_at=None if run_at is None else _check_run_at(run_at),
            delay=None if delay is None else _check_delay(delay),
        )


@dataclass(frozen=True, slots=True)
class Overrides:
    """The per-call options of `enqueue()` and the bulk forms, each validated once."""

    priority: int | None
    queue: str | None
    context: str
    max_payload_bytes: int | None
    timeout_seconds: float | None

    @classmethod
    def checked(
        cls,
        *,
        priority: object,
        queue: object,
        context: object,
        max_payload_bytes: object,
        timeout: object,
    ) -> Overrides:
        # The very checks of Task class options (sqla_jobs.options), as EnqueueError here.
        try:
            checked_timeout = check_timeout(timeout)
            return cls(
                priority=None if priority is None else check_priority(priority),
                queue=None if queue is None else check_queue(queue),
                context=check_context(context),
                max_payload_bytes=(
                    None
                    if max_payload_bytes is None
                    else check_max_payload_bytes(max_payload_bytes)
                ),
                timeout_seconds=None
                if checked_timeout is None
                else checked_timeout.total_seconds(),
            )
        except ValueError as exc:
            raise EnqueueError(str(exc)) from exc


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


def encode_payload(task: Task, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Return `task`'s fields as JSON text, or raise `PayloadError` saying what is wrong.

    Refused: what JSON cannot hold (NaN, infinities, NUL characters, text or bytes that are
    not valid UTF-8), and JSON longer than `max_bytes` in compact UTF-8. Everything refused
    here would otherwise fail the caller's whole transaction at commit, or change on the way.
    """
    name = type(task).__qualname__
    try:
        text = task.model_dump_json()
    except (PydanticSerializationError, UnicodeError) as exc:
        raise PayloadError(f"{name}{_failing_field(task)} cannot be stored as JSON: {exc}") from exc
    # Task dumps NaN and infinities as the constants NaN and Infinity, which are not JSON;
    # the substring test keeps the search for their field off the common path.
    if "NaN" in text or "Infinity" in text:
        found = _non_finite(task.model_dump(), "")
        if found is not None:
            path, value = found
            raise PayloadError(f"{name}: {path} is {value}, which JSON cannot hold")
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        # PostgreSQL rejects \u0000 in JSONB at commit, which would sink the caller's transaction.
        raise PayloadError(f"{name} payload contains a NUL character (\\u0000)")
    # PostgreSQL would take up to ~256 MB of JSONB; a runaway payload is better refused here,
    # in the caller's request, than read back by every claim and retry of the job.
    size = len(text) if text.isascii() else len(text.encode())
    if size > max_bytes:
        raise PayloadError(
            f"{name} payload is {size} bytes of JSON, over the limit of "
            f"{max_bytes} bytes (max_payload_bytes)"
        )
    return text


def _failing_field(task: Task) -> str:
    """Return " field <name>" for the first field that cannot be serialised, or ""."""
    for field in type(task).model_fields:
        try:
            task.model_dump_json(include={field})
        except (PydanticSerializationError, UnicodeError):
            return f" field {field!r}"
    return ""


def _non_finite(value: object, path: str) -> tuple[str, float] | None:
    """Return the path and value of the first NaN or infinity inside `value`, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items: Iterable[tuple[object, object]] = value.items()
        for key, item in items:
            found = _non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _check_run_at(run_at: object) -> datetime:
    if not isinstance(run_at, datetime):
        raise EnqueueError("run_at must be a datetime")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise EnqueueError(
            "run_at must be timezone-aware (e.g. datetime.now(UTC) + ...): a naive datetime "
            "is ambiguous"
        )
    return run_at


def _check_delay(delay: object) -> timedelta:
    if not isinstance(delay, timedelta):
        raise EnqueueError("delay must be a timedelta")
    return delay
