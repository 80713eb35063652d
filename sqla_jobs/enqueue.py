"""Turn Tasks into job rows.

`enqueue()` returns an unsaved `Job` for the caller's session; `enqueue_many()` yields bulk
INSERT statements for the caller to execute. Both build rows with `_job_values`.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import PydanticSerializationError, to_json
from sqlalchemy import Executable

from .clock import db_now_plus
from .dialects.bulk import InsertJobRows
from .errors import EnqueueError, PayloadError
from .models import Job
from .tasks import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_NAME_LENGTH,
    Task,
    is_concrete,
    is_positive_duration,
)

# A NUL character, as JSON escapes it: "\u0000" after an even number of backslashes (an odd
# number would make it the text "\u0000", which is fine).
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_INT32 = range(-(2**31), 2**31)


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
    rolls back. `run_at` (timezone-aware) or `delay` (counted from the database's clock at
    insert) defer the job; `priority`, `queue`, `max_payload_bytes` and `timeout` override the
    task's options. A payload whose JSON is larger than `max_payload_bytes` raises
    `PayloadError`.

    >>> session.add(enqueue(SendEmail(to="a@example.com"), delay=timedelta(minutes=5)))
    """
    if not isinstance(task, Task):
        raise EnqueueError(f"enqueue() takes a Task instance, not {type(task).__name__}")
    overrides = _Overrides.checked(
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
    )
    job = Job(**_job_values(task, overrides))
    run_at, delay = _check_schedule(run_at, delay)
    if run_at is not None:
        job.run_at = run_at
    elif delay is not None:
        # A SQL expression the flush evaluates, so the delay counts from the database's clock.
        job.run_at = db_now_plus(delay.total_seconds())
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
    `enqueue()`, the jobs exist once the caller's transaction commits.

    >>> for statement in enqueue_many(SendEmail(to=a) for a in addresses):
    ...     session.execute(statement)  # `await session.execute(...)` on an AsyncSession
    >>> session.commit()
    """
    if isinstance(tasks, Task):
        raise EnqueueError("enqueue_many() takes an iterable of Tasks; use enqueue() for one")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise EnqueueError("chunk_size must be an int of at least 1")
    # Checked here, so a bad option raises at the call rather than at the first chunk.
    run_at, delay = _check_schedule(run_at, delay)
    overrides = _Overrides.checked(
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
    )
    delay_seconds = 0.0 if delay is None else delay.total_seconds()
    return (
        InsertJobRows([row | {"run_at": run_at} for row in chunk], delay_seconds=delay_seconds)
        for chunk in _chunks(_rows(tasks, overrides), chunk_size)
    )


def _rows(tasks: Iterable[Task], overrides: _Overrides) -> Iterator[dict[str, Any]]:
    for index, task in enumerate(tasks):
        try:
            if not isinstance(task, Task):
                raise EnqueueError(f"enqueue_many() takes Tasks, not {type(task).__name__}")
            yield _job_values(task, overrides)
        except EnqueueError as exc:
            raise type(exc)(f"tasks[{index}]: {exc}") from exc


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    # A whole chunk is built (and so validated) before its statement is yielded.
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


@dataclass(frozen=True, slots=True)
class _Overrides:
    """The per-call options of `enqueue()` and `enqueue_many()`, each validated once."""

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
    ) -> _Overrides:
        return cls(
            priority=None if priority is None else _check_priority(priority),
            queue=None if queue is None else _check_queue(queue),
            context=_check_context(context),
            max_payload_bytes=(
                None if max_payload_bytes is None else _check_max_payload_bytes(max_payload_bytes)
            ),
            timeout_seconds=None if timeout is None else _check_timeout(timeout).total_seconds(),
        )


def _job_values(task: Task, overrides: _Overrides) -> dict[str, Any]:
    """Return the column values of a new job running `task` (its options were checked when
    its class was created, the overrides when they were given)."""
    task_class = type(task)
    if not is_concrete(task_class):
        raise EnqueueError(f"{task_class.__qualname__} does not implement run()")
    options = task_class.__task_options__
    max_bytes = overrides.max_payload_bytes or options.max_payload_bytes
    return {
        "id": uuid.uuid4(),
        "name": options.name,
        "payload": to_payload(task, max_bytes=max_bytes),
        "queue": options.queue if overrides.queue is None else overrides.queue,
        "priority": options.priority if overrides.priority is None else overrides.priority,
        "context": overrides.context,
        "error_count": 0,
        "timeout_seconds": overrides.timeout_seconds,
    }


def _check_schedule(run_at: object, delay: object) -> tuple[datetime | None, timedelta | None]:
    if run_at is not None and delay is not None:
        raise EnqueueError("pass run_at or delay, not both")
    return (
        None if run_at is None else _check_run_at(run_at),
        None if delay is None else _check_delay(delay),
    )


def to_payload(task: Task, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Return `task`'s fields as a JSON object, or raise `PayloadError` saying what is wrong.

    The size checked is that of the compact UTF-8 JSON encoding, in bytes.
    """
    try:
        payload = task.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise PayloadError(f"{type(task).__qualname__} cannot be stored as JSON: {exc}") from exc
    encoded = to_json(payload)
    if _ESCAPED_NUL.search(encoded):
        # PostgreSQL rejects \u0000 in JSONB at commit, which would sink the caller's transaction.
        raise PayloadError(f"{type(task).__qualname__} payload contains a NUL character (\\u0000)")
    # PostgreSQL would take up to ~256 MB of JSONB; a runaway payload is better refused here,
    # in the caller's request, than read back by every claim and retry of the job.
    size = len(encoded)
    if size > max_bytes:
        raise PayloadError(
            f"{type(task).__qualname__} payload is {size} bytes of JSON, over the limit of "
            f"{max_bytes} bytes (max_payload_bytes)"
        )
    return payload


def _check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not queue or len(queue) > MAX_NAME_LENGTH:
        raise EnqueueError(f"queue must be a non-empty string of at most {MAX_NAME_LENGTH} chars")
    return queue


def _check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or priority not in _INT32:
        raise EnqueueError("priority must be an int between -2**31 and 2**31 - 1")
    return priority


def _check_timeout(timeout: object) -> timedelta:
    if not is_positive_duration(timeout):
        raise EnqueueError("timeout must be a positive timedelta")
    assert isinstance(timeout, timedelta)
    return timeout


def _check_max_payload_bytes(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise EnqueueError("max_payload_bytes must be an int of at least 1")
    return limit


def _check_context(context: object) -> str:
    if not isinstance(context, str) or "\x00" in context:
        raise EnqueueError("context must be a string without NUL characters")
    return context


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
