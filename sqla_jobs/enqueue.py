"""Turn a Task into a job row: `enqueue()` returns an unsaved `Job` for the caller's session."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import PydanticSerializationError

from .clock import db_now_plus
from .errors import EnqueueError, PayloadError
from .models import Job
from .tasks import MAX_NAME_LENGTH, Task, is_concrete

_INT32 = range(-(2**31), 2**31)


def enqueue(
    task: Task,
    *,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    priority: int | None = None,
    queue: str | None = None,
    context: str = "",
) -> Job:
    """Return a new, unsaved `Job` that runs `task`; add it to your session to enqueue it.

    No I/O happens here: the job exists once the caller's transaction commits, and never if it
    rolls back. `run_at` (timezone-aware) or `delay` (counted from the database's clock at
    insert) defer the job; `priority` and `queue` override the task's options.

    >>> session.add(enqueue(SendEmail(to="a@example.com"), delay=timedelta(minutes=5)))
    """
    if not isinstance(task, Task):
        raise EnqueueError(f"enqueue() takes a Task instance, not {type(task).__name__}")
    task_class = type(task)
    if not is_concrete(task_class):
        raise EnqueueError(f"{task_class.__qualname__} does not implement run()")
    options = task_class.__task_options__
    job = Job(
        id=uuid.uuid4(),
        name=options.name,
        payload=to_payload(task),
        queue=_check_queue(options.queue if queue is None else queue),
        priority=_check_priority(options.priority if priority is None else priority),
        context=_check_context(context),
        error_count=0,
    )
    if run_at is not None and delay is not None:
        raise EnqueueError("pass run_at or delay, not both")
    if run_at is not None:
        job.run_at = _check_run_at(run_at)
    elif delay is not None:
        # A SQL expression the flush evaluates, so the delay counts from the database's clock.
        job.run_at = db_now_plus(_check_delay(delay).total_seconds())
    return job


def to_payload(task: Task) -> dict[str, Any]:
    """Return `task`'s fields as a JSON object, or raise `PayloadError` saying what is wrong."""
    try:
        payload = task.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise PayloadError(f"{type(task).__qualname__} cannot be stored as JSON: {exc}") from exc
    if _has_nul(payload):
        # PostgreSQL rejects \u0000 in JSONB at commit, which would sink the caller's transaction.
        raise PayloadError(f"{type(task).__qualname__} payload contains a NUL character (\\u0000)")
    return payload


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not queue or len(queue) > MAX_NAME_LENGTH:
        raise EnqueueError(f"queue must be a non-empty string of at most {MAX_NAME_LENGTH} chars")
    return queue


def _check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or priority not in _INT32:
        raise EnqueueError("priority must be an int between -2**31 and 2**31 - 1")
    return priority


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
