"""Run one claimed job and decide its `Outcome`; no SQL here (the worker writes it back)."""

from __future__ import annotations

import asyncio
import contextvars
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

from pydantic import ValidationError

from .context import ClaimedJob, JobContext
from .errors import JobTimeoutError, UnknownTaskError
from .retry import exponential_backoff, is_exhausted
from .tasks import Task, is_async

# Tracebacks can be huge (deep recursion); the row keeps the head and the tail.
MAX_ERROR_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class Completed:
    """The job succeeded: delete its row."""


@dataclass(frozen=True, slots=True)
class CompletedInTransaction:
    """The job deleted its own row in `ctx.transaction()`: nothing is left to write back.

    `error` is what `run` raised after that commit: logged, never retried (the job is done).
    """

    error: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """The job failed and has retries left: reschedule it after `delay`."""

    error: str
    delay: timedelta


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The job failed its last retry: move it to the dead-letter table."""

    error: str


Outcome: TypeAlias = Completed | CompletedInTransaction | Retry | DeadLetter


async def execute(
    job: ClaimedJob,
    ctx: JobContext,
    *,
    tasks: Mapping[str, type[Task]],
    default_max_retries: int,
    executor: Executor | None = None,
) -> Outcome:
    """Run `job` and return what should become of it.

    Anything the job raises, `BaseException`s included, is a failed attempt, unless
    `ctx.transaction()` has already completed the job; only `asyncio.CancelledError` (the
    worker shutting down) propagates.
    """
    task_class = tasks.get(job.name)
    try:
        if task_class is None:
            raise UnknownTaskError(
                f"no task named {job.name!r} is served by this worker; is it imported?"
            )
        task = _load(task_class, job.payload)
        await _run(task, ctx, executor, _timeout(job, task_class))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if ctx.is_completed:
            return CompletedInTransaction(error=format_error(exc))
        return _failed(job, exc, task_class, default_max_retries)
    return CompletedInTransaction() if ctx.is_completed else Completed()


def _timeout(job: ClaimedJob, task_class: type[Task]) -> timedelta | None:
    if job.timeout_seconds is not None:
        return timedelta(seconds=job.timeout_seconds)
    return task_class.__task_options__.timeout


def _load(task_class: type[Task], payload: dict[str, Any]) -> Task:
    try:
        return task_class.model_validate(payload)
    except ValidationError as exc:
        raise PayloadValidationError(
            f"payload does not validate as {task_class.__qualname__}: {exc}"
        ) from exc


class PayloadValidationError(Exception):
    """The stored payload no longer matches the task's fields."""


async def _run(
    task: Task, ctx: JobContext, executor: Executor | None, time_limit: timedelta | None
) -> None:
    limit = None if time_limit is None else time_limit.total_seconds()
    if is_async(type(task)):
        if limit is None:
            # Most jobs have no timeout: skip the timeout scope, it is per-job overhead.
            await task.run(ctx)
            return
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                await task.run(ctx)
        except TimeoutError:
            if deadline.expired():
                raise JobTimeoutError(f"cancelled at its timeout of {limit:g} s") from None
            raise  # the job's own TimeoutError: an ordinary failure
        return
    loop = asyncio.get_running_loop()
    # copy_context carries loguru's contextualize() values into the thread.
    call = contextvars.copy_context().run
    started = time.monotonic()
    await loop.run_in_executor(executor, call, task.run, ctx)
    took = time.monotonic() - started
    if limit is not None and took > limit:
        # A thread cannot be interrupted: the job ran to its end, too late to count as done.
        raise JobTimeoutError(
            f"ran {took:.3g} s, over its timeout of {limit:g} s (a sync job cannot be "
            "interrupted, so it was recorded as failed when it returned)"
        )


def _failed(
    job: ClaimedJob, exc: BaseException, task_class: type[Task] | None, default_max_retries: int
) -> Outcome:
    return failure_outcome(
        format_error(exc),
        error_count=job.error_count,
        task_class=task_class,
        default_max_retries=default_max_retries,
    )


def failure_outcome(
    error: str, *, error_count: int, task_class: type[Task] | None, default_max_retries: int
) -> Retry | DeadLetter:
    """Decide what becomes of a job that failed with `error_count` earlier failures."""
    options = task_class.__task_options__ if task_class else None
    max_retries = default_max_retries
    if options and options.max_retries is not None:
        max_retries = options.max_retries
    if is_exhausted(error_count, max_retries):
        return DeadLetter(error=error)
    backoff = options.backoff if options else exponential_backoff
    return Retry(error=error, delay=backoff(error_count))


def format_error(exc: BaseException) -> str:
    """Return the message and traceback of `exc`, bounded in size and storable as text."""
    text = "".join(traceback.format_exception(exc))
    # PostgreSQL text cannot hold NUL; keep it visible rather than losing the whole error.
    text = text.replace("\x00", "\\x00")
    if len(text) <= MAX_ERROR_CHARS:
        return text
    keep = MAX_ERROR_CHARS // 2
    cut = len(text) - 2 * keep
    return f"{text[:keep]}\n… [{cut} characters cut] …\n{text[-keep:]}"
