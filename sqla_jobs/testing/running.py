"""Run jobs in tests: `perform` one task inline, or `drain` the due jobs through a `Worker`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, overload

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sqla_jobs.context import JobContext
from sqla_jobs.enqueue import encode_payload
from sqla_jobs.errors import EnqueueError, JobFailedError, PayloadError, SqlaJobsError
from sqla_jobs.models import Job
from sqla_jobs.tasks import Task, is_concrete
from sqla_jobs.worker import Worker

R = TypeVar("R")

PERFORM_WORKER_ID = "sqla_jobs.testing.perform"


def perform(
    task: Task,
    *,
    state: Any = None,
    queue: str | None = None,
    priority: int | None = None,
    context: str = "",
    error_count: int = 0,
) -> Any:
    """Run `task` inline with a `JobContext`, as a worker would, and return what `run` returns.

    The task first goes through its JSON payload, as a stored job does, so one that could not
    be enqueued fails here too (`PayloadError`). A plain `def run` runs in the calling thread;
    for an `async def run`, await the result. `state` becomes `ctx.state`; `error_count`
    simulates earlier failed attempts. `ctx.transaction()` raises `TransactionUsageError`: it
    needs a job row held by a worker (`drain` runs such jobs).

    >>> perform(Resize(image_id=1), state=clients)
    >>> await perform(SendEmail(to="a@example.com"))
    """
    task_class = type(task)
    if not isinstance(task, Task) or not is_concrete(task_class):
        raise EnqueueError("perform() takes an instance of a Task class that implements run()")
    options = task_class.__task_options__
    payload = encode_payload(task, max_bytes=options.max_payload_bytes)
    try:
        stored = task_class.model_validate_json(payload)
    except ValidationError as exc:
        raise PayloadError(
            f"{task_class.__qualname__} does not validate from its own JSON payload: {exc}"
        ) from exc
    now = datetime.now(UTC)
    ctx = JobContext(
        job_id=uuid.uuid4(),
        name=options.name,
        queue=options.queue if queue is None else queue,
        priority=options.priority if priority is None else priority,
        error_count=error_count,
        context=context,
        created_at=now,
        run_at=now,
        worker_id=PERFORM_WORKER_ID,
        state=state,
    )
    return stored.run(ctx)


class JobFailure(NamedTuple):
    """A failed attempt seen by `drain`: the job, its task name and its error with traceback."""

    job_id: uuid.UUID
    name: str
    error: str


@dataclass(frozen=True, slots=True)
class DrainSummary:
    """What `drain` did: how many jobs succeeded and failed, and the failures' errors."""

    succeeded: int
    """Jobs that completed (their rows are deleted)."""
    failed: int
    """Failed attempts: `retried` plus `dead_lettered`."""
    retried: int
    """Failed attempts rescheduled with backoff (not due again during this drain, usually)."""
    dead_lettered: int
    """Failed attempts that exhausted their retries and moved to the dead-letter table."""
    failures: tuple[JobFailure, ...]
    """The failed attempts' errors (the latest 100 if there were more)."""
    snoozed: int = 0
    """Runs that raised `Snooze` (not failures: the job runs again after its delay)."""

    @property
    def processed(self) -> int:
        """Return the number of jobs run, whatever their outcome."""
        return self.succeeded + self.failed + self.snoozed


@overload
def drain(
    session_or_engine: Session | Engine,
    *,
    tasks: Iterable[type[Task]] | None = None,
    queues: Sequence[str] | None = None,
    state: Any = None,
    raise_failures: bool = False,
) -> DrainSummary: ...
@overload
def drain(
    session_or_engine: AsyncSession | AsyncEngine,
    *,
    tasks: Iterable[type[Task]] | None = None,
    queues: Sequence[str] | None = None,
    state: Any = None,
    raise_failures: bool = False,
) -> Coroutine[Any, Any, DrainSummary]: ...
def drain(
    session_or_engine: Session | Engine | AsyncSession | AsyncEngine,
    *,
    tasks: Iterable[type[Task]] | None = None,
    queues: Sequence[str] | None = None,
    state: Any = None,
    raise_failures: bool = False,
) -> DrainSummary | Coroutine[Any, Any, DrainSummary]:
    """Run every due job (and those they enqueue) with a `Worker`, then return a summary.

    The worker works on its own connections, so it sees committed jobs only: commit first. A
    session is used for its engine (its bind). `tasks`, `queues` and `state` are the worker's.
    A failed attempt counts as failed; jobs retried with backoff stay in the table, not due.
    With `raise_failures`, any failure raises `JobFailedError`, naming each job with its error.
    Given an `AsyncSession` or `AsyncEngine`, await the result.

    >>> drain(engine, tasks=[SendEmail], raise_failures=True)
    DrainSummary(succeeded=1, failed=0, retried=0, dead_lettered=0, failures=())
    >>> summary = await drain(async_session, state=clients)
    """
    _refuse_pending_jobs(session_or_engine)
    options = {"tasks": tasks, "queues": queues, "state": state}
    if isinstance(session_or_engine, AsyncSession | AsyncEngine):
        engine = _async_engine_of(session_or_engine)
        return _drain(engine, options, raise_failures=raise_failures)
    if isinstance(session_or_engine, Session | Engine):
        url = _worker_url(_sync_engine_of(session_or_engine).url)
        return _run_to_completion(_drain(url, options, raise_failures=raise_failures))
    raise TypeError(
        "drain() takes a Session, an AsyncSession, an Engine or an AsyncEngine, "
        f"not {type(session_or_engine).__name__}"
    )


async def _drain(
    target: AsyncEngine | URL, options: dict[str, Any], *, raise_failures: bool
) -> DrainSummary:
    worker = Worker(target, handle_signals=False, **options)
    await worker.run_until_idle()
    outcomes = worker.outcomes
    retried, dead_lettered = outcomes["Retry"], outcomes["DeadLetter"]
    summary = DrainSummary(
        succeeded=outcomes["Completed"] + outcomes["DoneInTransaction"],
        failed=retried + dead_lettered,
        retried=retried,
        dead_lettered=dead_lettered,
        failures=tuple(JobFailure(*failure) for failure in worker.failures),
        snoozed=outcomes["Snoozed"],
    )
    if raise_failures and summary.failed:
        raise JobFailedError(summary.failures, count=summary.failed)
    return summary


def _refuse_pending_jobs(target: object) -> None:
    session = target.sync_session if isinstance(target, AsyncSession) else target
    if isinstance(session, Session) and any(isinstance(obj, Job) for obj in session.new):
        raise SqlaJobsError(
            "drain() runs committed jobs only, and this session holds jobs it has not even "
            "flushed: commit the session first"
        )


def _async_engine_of(target: AsyncSession | AsyncEngine) -> AsyncEngine:
    if isinstance(target, AsyncEngine):
        return target
    bind = target.sync_session.get_bind(Job)
    # A session joined to an outer connection (the rollback-per-test recipe) still names the
    # engine; the worker takes connections of its own from it.
    return AsyncEngine(bind if isinstance(bind, Engine) else bind.engine)


def _sync_engine_of(target: Session | Engine) -> Engine:
    if isinstance(target, Engine):
        return target
    bind = target.get_bind(Job)
    return bind if isinstance(bind, Engine) else bind.engine


def _worker_url(url: URL) -> URL:
    # The worker runs on asyncpg or aiosqlite, whichever sync driver the application uses.
    backend = url.get_backend_name()
    if backend == "postgresql":
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    return url


def _run_to_completion(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run `coroutine` on a new event loop, in a thread of its own if this one runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # A sync engine in an async test: this thread's loop cannot be re-entered.
    with ThreadPoolExecutor(1, thread_name_prefix="sqla_jobs_drain") as pool:
        return pool.submit(asyncio.run, coroutine).result()
