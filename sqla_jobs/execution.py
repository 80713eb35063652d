"""Run one claimed job and decide its `Outcome`; every outcome is decided here, none written.

`execute` runs a job and decides what becomes of it; `cancelled_outcome` and `lost_outcome`
decide for a job cancelled on request and for a job whose worker died. The store writes the
outcome back; no SQL here.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeAlias

from loguru import logger
from pydantic import ValidationError

from . import errors
from .context import ClaimedJob, JobContext
from .errors import JobTimeoutError, UnknownTaskError
from .options import DEFAULT_MAX_SNOOZES
from .retry import MAX_RETRY_DELAY, exponential_backoff, is_exhausted
from .tasks import Task, is_async

# Tracebacks can be huge (deep recursion); the row keeps the head and the tail.
MAX_ERROR_CHARS = 16_384

RunInThread: TypeAlias = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a plain ``def run`` in a worker thread and awaits it."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The job succeeded: delete its row."""


@dataclass(frozen=True, slots=True)
class DoneInTransaction:
    """The job deleted its own row in `ctx.transaction()`: nothing is left to write back.

    `error` is what `run` raised after that commit: logged, never retried (the job is done).
    """

    error: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """What `run` raised, for lifecycle hooks (never written)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """The job failed and has retries left: reschedule it after `delay`."""

    error: str
    delay: timedelta
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Snoozed:
    """The job raised `Snooze`: run it again after `delay`, counting a snooze, not a failure."""

    delay: timedelta


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The job failed its last retry (or was cancelled): move it to the dead-letter table."""

    error: str
    exception: BaseException | None = field(default=None, compare=False, repr=False)


Outcome: TypeAlias = Completed | DoneInTransaction | Retry | Snoozed | DeadLetter


async def execute(
    job: ClaimedJob,
    ctx: JobContext,
    *,
    tasks: Mapping[str, type[Task]],
    default_max_retries: int,
    run_in_thread: RunInThread,
) -> Outcome:
    """Run `job` and return what should become of it.

    Anything the job raises, `BaseException`s included, is a failed attempt, unless
    `ctx.transaction()` has already completed the job; only `asyncio.CancelledError` (a
    cancellation by shutdown or on request) propagates.
    """
    task_class = tasks.get(job.name)
    try:
        if job.problem is not None:
            raise UndecodableRowError(f"the job's row cannot be read: {job.problem}")
        if task_class is None:
            raise UnknownTaskError(
                f"no task named {job.name!r} is served by this worker; is it imported?"
            )
        task = _load(task_class, job.payload_json)
        await _run(task, ctx, run_in_thread, _timeout(job, task_class))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if ctx.is_completed:
            return DoneInTransaction(error=format_error(exc), exception=exc)
        if isinstance(exc, errors.JobControl):
            outcome = control_outcome(
                exc,
                job=job,
                task_class=task_class,
                default_max_retries=default_max_retries,
            )
        else:
            outcome = failure_outcome(
                format_error(exc),
                error_count=job.error_count,
                task_class=task_class,
                default_max_retries=default_max_retries,
            )
        # Kept for the worker's lifecycle hooks; the row gets the formatted `error` only.
        return (
            replace(outcome, exception=exc) if isinstance(outcome, Retry | DeadLetter) else outcome
        )
    return DoneInTransaction() if ctx.is_completed else Completed()


def control_outcome(
    control: errors.JobControl,
    *,
    job: ClaimedJob,
    task_class: type[Task] | None,
    default_max_retries: int,
) -> Outcome:
    """Decide for a job whose `run` raised `Snooze`, `Discard` or `Retry`."""
    match control:
        case errors.Snooze(delay=delay):
            options = task_class.__task_options__ if task_class else None
            max_snoozes = options.max_snoozes if options else DEFAULT_MAX_SNOOZES
            if job.snooze_count >= max_snoozes:
                return DeadLetter(
                    error=f"snoozed more than its max_snoozes ({max_snoozes}) allow\n\n"
                    + format_error(control)
                )
            return Snoozed(delay=delay)
        case errors.Discard():
            return DeadLetter(error=format_error(control))
        case errors.Retry(delay=delay):
            outcome = failure_outcome(
                format_error(control),
                error_count=job.error_count,
                task_class=task_class,
                default_max_retries=default_max_retries,
            )
            if isinstance(outcome, Retry) and delay is not None:
                return Retry(error=outcome.error, delay=delay)
            return outcome
        case _:
            # A JobControl of the application's own: an ordinary failure.
            return failure_outcome(
                format_error(control),
                error_count=job.error_count,
                task_class=task_class,
                default_max_retries=default_max_retries,
            )


def cancelled_outcome(reason: str, *, is_completed: bool) -> DoneInTransaction | DeadLetter:
    """Decide for a job cancelled on request while it ran (`is_completed`: its transaction had
    already committed, so it is done)."""
    error = f"cancelled: {reason}"
    return DoneInTransaction(error=error) if is_completed else DeadLetter(error=error)


def lost_outcome(
    *,
    name: str,
    error_count: int,
    error: str,
    cancel_reason: str | None,
    task_class: type[Task] | None,
    default_max_retries: int,
) -> Retry | DeadLetter:
    """Decide for a job whose worker was lost while running it: a failed attempt, or, if it was
    cancelled meanwhile, a dead letter."""
    if cancel_reason is not None:
        return DeadLetter(error=f"cancelled: {cancel_reason} ({error})")
    return failure_outcome(
        error,
        error_count=error_count,
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
    return Retry(error=error, delay=retry_delay(task_class, error_count))


def retry_delay(task_class: type[Task] | None, error_count: int) -> timedelta:
    """Return the task's backoff for `error_count`, or the default policy's if the task's own
    raises or returns something other than a timedelta between 0 and `MAX_RETRY_DELAY`."""
    if task_class is None:
        return exponential_backoff(error_count)
    backoff = task_class.__task_options__.backoff
    if backoff is exponential_backoff:
        return exponential_backoff(error_count)
    try:
        delay = backoff(error_count)
    except Exception as exc:
        logger.opt(exception=exc).error(
            "task backoff raised; using the default backoff", task=task_class.__qualname__
        )
        return exponential_backoff(error_count)
    if not isinstance(delay, timedelta) or not timedelta(0) <= delay <= MAX_RETRY_DELAY:
        logger.error(
            "task backoff returned no timedelta between 0 and its limit; using the default backoff",
            task=task_class.__qualname__,
            returned=repr(delay)[:200],
        )
        return exponential_backoff(error_count)
    return delay


def _timeout(job: ClaimedJob, task_class: type[Task]) -> timedelta | None:
    if job.timeout_seconds is not None:
        return timedelta(seconds=job.timeout_seconds)
    return task_class.__task_options__.timeout


def _load(task_class: type[Task], payload_json: str) -> Task:
    try:
        # Straight from the stored JSON text: one parse, no intermediate dict.
        return task_class.model_validate_json(payload_json)
    except ValidationError as exc:
        raise PayloadValidationError(
            f"payload does not validate as {task_class.__qualname__}: {exc}"
        ) from exc


class PayloadValidationError(Exception):
    """The stored payload no longer matches the task's fields."""


class UndecodableRowError(Exception):
    """A column of the job's row holds a value the worker cannot read."""


async def _run(
    task: Task, ctx: JobContext, run_in_thread: RunInThread, time_limit: timedelta | None
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
    started = time.monotonic()
    await run_in_thread(lambda: task.run(ctx))
    took = time.monotonic() - started
    if limit is not None and took > limit:
        # A thread cannot be interrupted: the job ran to its end, too late to count as done.
        raise JobTimeoutError(
            f"ran {took:.3g} s, over its timeout of {limit:g} s (a sync job cannot be "
            "interrupted, so it was recorded as failed when it returned)"
        )


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
