"""The worker: claim due jobs, run them concurrently, write their outcome back, shut down cleanly.

Data flows one way: claim (a short transaction that locks rows) → `execution.execute` (no
transaction open while the job runs) → one short, guarded transaction that completes, retries
or dead-letters the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, assert_never

from loguru import logger
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqla_jobs.context import ClaimedJob, JobContext
from sqla_jobs.dialects import JobStatements, statements_for
from sqla_jobs.engine import create_engine
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.execution import Completed, DeadLetter, Outcome, Retry, execute
from sqla_jobs.tasks import Task, is_concrete, registered_tasks
from sqla_jobs.urls import display_url

DEFAULT_CONCURRENCY = 10
DEFAULT_POLL_INTERVAL = timedelta(seconds=1)
DEFAULT_LOCK_TIMEOUT = timedelta(hours=2)
DEFAULT_SHUTDOWN_TIMEOUT = timedelta(seconds=30)
DEFAULT_MAX_RETRIES = 20

# Transient trouble talking to the database: log, back off, try again; never exit over it.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)
MAX_DATABASE_BACKOFF = timedelta(seconds=30)
# Writing an outcome back is retried this many times before the job is left to the lock timeout.
RECORD_ATTEMPTS = 6


class Worker:
    """Run the jobs of a database's queues.

    `engine_or_url` is an `AsyncEngine` or a URL (plain ``postgresql://`` URLs run on asyncpg).
    `tasks` defaults to every registered `Task`; `queues` to the queues of those tasks. `state`
    is handed to every job as `ctx.state`.

    >>> worker = Worker("postgresql://app@db/app", concurrency=20, state=clients)
    >>> await worker.run()            # until worker.stop(), SIGTERM or SIGINT
    >>> await worker.run_until_idle() # or: run every due job, then return
    """

    def __init__(
        self,
        engine_or_url: AsyncEngine | str | URL,
        *,
        tasks: Iterable[type[Task]] | None = None,
        queues: Sequence[str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        state: Any = None,
        poll_interval: timedelta = DEFAULT_POLL_INTERVAL,
        lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
        shutdown_timeout: timedelta = DEFAULT_SHUTDOWN_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        worker_id: str | None = None,
        handle_signals: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be at least 0")
        for option, value in (("poll_interval", poll_interval), ("lock_timeout", lock_timeout)):
            if value <= timedelta(0):
                raise ConfigurationError(f"{option} must be positive")
        self._owns_engine = not isinstance(engine_or_url, AsyncEngine)
        self.engine = (
            engine_or_url
            if isinstance(engine_or_url, AsyncEngine)
            else create_engine(engine_or_url)
        )
        self.tasks = _task_map(tasks)
        self.queues = _queues(queues, self.tasks)
        self.concurrency = concurrency
        self.state = state
        self.poll_interval = poll_interval
        self.lock_timeout = lock_timeout
        self.shutdown_timeout = shutdown_timeout
        self.max_retries = max_retries
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.handle_signals = handle_signals
        self._statements: JobStatements = statements_for(self.engine.dialect.name)
        self._log = logger.bind(worker_id=self.id)
        self._running: set[asyncio.Task[None]] = set()
        self._executing: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self.jobs_processed = 0

    @property
    def was_forced(self) -> bool:
        """Tell whether the last run was cut short by a second signal (or `stop(force=True)`)."""
        return self._forced.is_set()

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming; running jobs get `shutdown_timeout` to finish (none with `force`)."""
        self._stopping.set()
        if force:
            self._forced.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Work until `stop()` is called or the process gets SIGTERM or SIGINT.

        The first signal stops claiming and lets running jobs finish for up to
        `shutdown_timeout`; a second one cancels them at once. Either way the locks this
        worker holds are released before returning, so other workers can claim those jobs.
        """
        await self._serve(until_idle=False)

    async def run_until_idle(self) -> int:
        """Run every job that is due (including ones those jobs enqueue), then return.

        Returns the number of jobs processed, whatever their outcome.
        """
        before = self.jobs_processed
        await self._serve(until_idle=True)
        return self.jobs_processed - before

    async def _serve(self, *, until_idle: bool) -> None:
        self._stopping.clear()
        self._forced.clear()
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sqla_jobs")
        remove_handlers = self._install_signal_handlers() if not until_idle else _no_op
        self._log.info(
            "worker started",
            database=display_url(self.engine.url),
            queues=list(self.queues),
            concurrency=self.concurrency,
            tasks=sorted(self.tasks),
        )
        try:
            await self._claim_loop(until_idle=until_idle)
        finally:
            # Handlers stay during the shutdown: a second signal there means "now".
            try:
                await self._shut_down()
            finally:
                remove_handlers()

    async def _claim_loop(self, *, until_idle: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = self.concurrency - len(self._running)
            claimed = 0
            if free > 0:
                try:
                    jobs = await self._claim(free)
                except DATABASE_ERRORS as exc:
                    failures += 1
                    await self._back_off("claim failed", exc, failures)
                    continue
                failures = 0
                for job in jobs:
                    self._start(job)
                claimed = len(jobs)
                if claimed == free:
                    continue
            if until_idle and claimed == 0 and not self._running:
                return
            await self._sleep(self.poll_interval)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        statement = self._statements.claim_jobs(
            worker_id=self.id, queues=self.queues, limit=limit, lock_timeout=self.lock_timeout
        )
        async with self.engine.begin() as connection:
            rows = (await connection.execute(statement)).all()
        jobs = [ClaimedJob(*row) for row in rows]
        self._log.debug("claimed jobs", count=len(jobs), limit=limit)
        return jobs

    def _start(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._process(job), name=f"sqla_jobs:{job.name}:{job.id}")
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.jobs_processed += 1
        self._wakeup.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # execute() turns job errors into outcomes, so this is a bug of ours: say so loudly.
            self._log.opt(exception=exc).error("job processing crashed")

    async def _process(self, job: ClaimedJob) -> None:
        with logger.contextualize(
            job_id=str(job.id), task=job.name, attempt=job.error_count + 1, worker_id=self.id
        ):
            ctx = JobContext.for_job(job, worker_id=self.id, state=self.state)
            me = asyncio.current_task()
            assert me is not None
            self._executing.add(me)
            try:
                outcome = await execute(
                    job,
                    ctx,
                    tasks=self.tasks,
                    default_max_retries=self.max_retries,
                    executor=self._executor,
                )
            except asyncio.CancelledError:
                self._log.warning("job cancelled by shutdown; its lock is released")
                raise
            finally:
                self._executing.discard(me)
            await self._record(job, outcome)

    async def _record(self, job: ClaimedJob, outcome: Outcome) -> None:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as connection:
                    held = await self._write_outcome(connection, job, outcome)
                break
            except DATABASE_ERRORS as exc:
                if attempt == RECORD_ATTEMPTS:
                    self._log.opt(exception=exc).error(
                        "job outcome not recorded; the job runs again after its lock expires"
                    )
                    return
                await self._back_off("recording job outcome failed", exc, attempt)
        if not held:
            self._log.warning("lock lost; the job's outcome was not recorded")
            return
        self._log_outcome(outcome)

    async def _write_outcome(
        self, connection: AsyncConnection, job: ClaimedJob, outcome: Outcome
    ) -> bool:
        """Write `outcome` in the open transaction; False if this worker lost the job's lock."""
        match outcome:
            case Completed():
                complete = self._statements.complete_jobs(worker_id=self.id, job_ids=[job.id])
                return _rowcount(await connection.execute(complete)) == 1
            case Retry(error=error, delay=delay):
                retry = self._statements.retry_job(
                    worker_id=self.id, job_id=job.id, error=error, delay=delay
                )
                return _rowcount(await connection.execute(retry)) == 1
            case DeadLetter(error=error):
                copy, remove = self._statements.dead_letter_job(
                    worker_id=self.id, job_id=job.id, error=error
                )
                await connection.execute(copy)
                if _rowcount(await connection.execute(remove)) != 1:
                    await connection.rollback()
                    return False
                return True
            case _:
                assert_never(outcome)

    def _log_outcome(self, outcome: Outcome) -> None:
        match outcome:
            case Completed():
                self._log.info("job completed")
            case Retry(error=error, delay=delay):
                self._log.warning(
                    "job failed; retrying", retry_in=delay.total_seconds(), error=_summary(error)
                )
            case DeadLetter(error=error):
                self._log.error("job failed; moved to the dead-letter table", error=_summary(error))
            case _:
                assert_never(outcome)

    async def _shut_down(self) -> None:
        self._stopping.set()
        if self._running and not self._forced.is_set():
            self._log.info("waiting for running jobs", count=len(self._running))
            await self._wait_for_running(self.shutdown_timeout)
        for task in list(self._executing):
            task.cancel()
        # Cancelled jobs end at once; jobs writing their outcome get a moment to commit it.
        await self._wait_for_running(timedelta(seconds=5), until_forced=False)
        await self._release_locks()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_engine:
            await self.engine.dispose()
        self._log.info("worker stopped", jobs_processed=self.jobs_processed)

    async def _wait_for_running(self, limit: timedelta, *, until_forced: bool = True) -> None:
        """Wait up to `limit` for running jobs to end (or, if `until_forced`, a forced stop)."""
        deadline = asyncio.get_running_loop().time() + limit.total_seconds()
        while True:
            # Cleared before the checks, so a job ending in between still wakes the sleep.
            self._wakeup.clear()
            if not self._running or (until_forced and self._forced.is_set()):
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            await self._sleep(timedelta(seconds=remaining))

    async def _release_locks(self) -> None:
        statement = self._statements.release_locks(worker_id=self.id)
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as connection:
                    released = _rowcount(await connection.execute(statement))
            except DATABASE_ERRORS as exc:
                if attempt == RECORD_ATTEMPTS:
                    self._log.opt(exception=exc).error(
                        "locks not released; the jobs run again after the lock timeout"
                    )
                    return
                await self._back_off("releasing locks failed", exc, attempt)
            else:
                self._log.info("locks released", count=released)
                return

    async def _back_off(self, what: str, exc: BaseException, failures: int) -> None:
        delay = min(timedelta(seconds=0.1 * 2**failures), MAX_DATABASE_BACKOFF)
        self._log.warning(
            what, error=_summary(str(exc)), failures=failures, retry_in=delay.total_seconds()
        )
        await self._sleep(delay)

    async def _sleep(self, delay: timedelta) -> None:
        """Sleep up to `delay`, waking early when a job finishes or the worker stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), delay.total_seconds())

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.handle_signals:
            return _no_op
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or a platform without signals
            installed.append(signum)

        def remove() -> None:
            for signum in installed:
                loop.remove_signal_handler(signum)

        return remove

    def _on_signal(self, signum: int) -> None:
        if self._stopping.is_set():
            self._log.warning("second signal; cancelling running jobs", signal=signum)
            self.stop(force=True)
        else:
            self._log.info("signal received; shutting down gracefully", signal=signum)
            self.stop()


def _no_op() -> None:
    return None


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _summary(error: str) -> str:
    """Return the last line of a traceback: the exception type and message."""
    lines = error.strip().splitlines()
    return lines[-1] if lines else ""


def _task_map(tasks: Iterable[type[Task]] | None) -> Mapping[str, type[Task]]:
    if tasks is None:
        return dict(registered_tasks())
    mapping: dict[str, type[Task]] = {}
    for task_class in tasks:
        if not (isinstance(task_class, type) and issubclass(task_class, Task)):
            raise ConfigurationError(f"tasks must be Task subclasses, not {task_class!r}")
        if not is_concrete(task_class):
            raise ConfigurationError(f"{task_class.__qualname__} does not implement run()")
        mapping[task_class.__task_options__.name] = task_class
    return mapping


def _queues(queues: Sequence[str] | None, tasks: Mapping[str, type[Task]]) -> tuple[str, ...]:
    if queues is None:
        queues = sorted({task.__task_options__.queue for task in tasks.values()})
    if isinstance(queues, str):
        raise ConfigurationError("queues must be a sequence of queue names, not a string")
    if not queues or not all(isinstance(q, str) and q for q in queues):
        raise ConfigurationError(
            "the worker has no queue to serve: register or pass tasks, or name queues"
        )
    return tuple(dict.fromkeys(queues))
