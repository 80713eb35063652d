"""Turn Tasks into job rows.

`enqueue()` returns an unsaved `Job` for the caller's session; `enqueue_many()` yields bulk
INSERT statements for the caller to execute. Both build rows with `_job_values`.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Iterator
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
    return Job(
        **_job_values(
            task,
            priority=priority,
            queue=queue,
            context=context,
            max_payload_bytes=max_payload_bytes,
            timeout=timeout,
        ),
        **_schedule(run_at=run_at, delay=delay),
    )


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
    if run_at is not None and delay is not None:
        raise EnqueueError("pass run_at or delay, not both")
    if run_at is not None:
        _check_run_at(run_at)
    delay_seconds = _check_delay(delay).total_seconds() if delay is not None else 0.0
    if queue is not None:
        _check_queue(queue)
    if priority is not None:
        _check_priority(priority)
    _check_context(context)
    if max_payload_bytes is not None:
        _check_max_payload_bytes(max_payload_bytes)
    if timeout is not None:
        _check_timeout(timeout)
    rows = _rows(
        tasks,
        priority=priority,
        queue=queue,
        context=context,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
    )
    return (
        InsertJobRows([row | {"run_at": run_at} for row in chunk], delay_seconds=delay_seconds)
        for chunk in _chunks(rows, chunk_size)
    )


def _rows(
    tasks: Iterable[Task],
    *,
    priority: int | None,
    queue: str | None,
    context: str,
    max_payload_bytes: int | None,
    timeout: timedelta | None,
) -> Iterator[dict[str, Any]]:
    for index, task in enumerate(tasks):
        try:
            if not isinstance(task, Task):
                raise EnqueueError(f"enqueue_many() takes Tasks, not {type(task).__name__}")
            yield _job_values(
                task,
                priority=priority,
                queue=queue,
                context=context,
                max_payload_bytes=max_payload_bytes,
                timeout=timeout,
            )
        except EnqueueError as exc:
            raise type(exc)(f"tasks[{index}]: {exc}") from exc


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    # A whole chunk is built (and so validated) before its statement is yielded.
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _job_values(
    task: Task,
    *,
    priority: int | None,
    queue: str | None,
    context: str,
    max_payload_bytes: int | None,
    timeout: timedelta | None,
) -> dict[str, Any]:
    """Return the column values of a new job running `task`, every argument validated."""
    task_class = type(task)
    if not is_concrete(task_class):
        raise EnqueueError(f"{task_class.__qualname__} does not implement run()")
    options = task_class.__task_options__
    if max_payload_bytes is None:
        max_payload_bytes = options.max_payload_bytes
    return {
        "id": uuid.uuid4(),
        "name": options.name,
        "payload": to_payload(task, max_bytes=_check_max_payload_bytes(max_payload_bytes)),
        "queue": _check_queue(options.queue if queue is None else queue),
        "priority": _check_priority(options.priority if priority is None else priority),
        "context": _check_context(context),
        "error_count": 0,
        "timeout_seconds": None if timeout is None else _check_timeout(timeout).total_seconds(),
    }


def _schedule(*, run_at: datetime | None, delay: timedelta | None) -> dict[str, Any]:
    """Return the `run_at` value for `run_at` or `delay`: none means the server default, now."""
    if run_at is not None and delay is not None:
        raise EnqueueError("pass run_at or delay, not both")
    if run_at is not None:
        return {"run_at": _check_run_at(run_at)}
    if delay is not None:
        # A SQL expression the insert evaluates, so the delay counts from the database's clock.
        return {"run_at": db_now_plus(_check_delay(delay).total_seconds())}
    return {}


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
