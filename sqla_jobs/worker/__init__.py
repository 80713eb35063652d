"""The worker: claim due jobs, run them concurrently, write their outcome back, shut down cleanly.

Data flows one way: claim (a short transaction that locks rows) → `execution.execute` (no
transaction open while the job runs) → `Completer`, which writes the outcome back in short,
guarded transactions (successes in batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

from loguru import logger
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import wakeup
from sqla_jobs.context import ClaimedJob, JobContext
from sqla_jobs.dialects import JobStatements, statements_for
from sqla_jobs.engine import create_engine, create_sync_engine
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.execution import (
    CompletedInTransaction,
    DeadLetter,
    Outcome,
    Retry,
    execute,
    failure_outcome,
)
from sqla_jobs.tasks import Task, registered_tasks
from sqla_jobs.transaction import JobCompletion
from sqla_jobs.urls import display_url
from sqla_jobs.worker.completer import (
    DATABASE_ERRORS,
    Completer,
    backoff_delay,
    summarize_error,
)
from sqla_jobs.worker.heartbeat import Heartbeat
from sqla_jobs.worker.listener import Listener
from sqla_jobs.worker.options import check_limits, pool_options, serve_queues, task_map

DEFAULT_CONCURRENCY = 10
DEFAULT_POLL_INTERVAL = timedelta(seconds=1)
DEFAULT_LOCK_TIMEOUT = timedelta(hours=2)
DEFAULT_SHUTDOWN_TIMEOUT = timedelta(seconds=30)
DEFAULT_MAX_RETRIES = 20
DEFAULT_HEARTBEAT_INTERVAL = timedelta(seconds=5)
DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# Writing an outcome back is retried this many times before the job is left to the lock timeout.
RECORD_ATTEMPTS = 6
# While busy, claim once a quarter of the slots is free (or after this pause), rather than one
# round trip per finished job.
CLAIM_COOLDOWN = timedelta(milliseconds=2)


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
        heartbeat_interval: timedelta = DEFAULT_HEARTBEAT_INTERVAL,
        heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT,
        worker_id: str | None = None,
        handle_signals: bool = True,
    ) -> None:
        check_limits(
            concurrency=concurrency,
            max_retries=max_retries,
            poll_interval=poll_interval,
            lock_timeout=lock_timeout,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
        )
        # An engine the caller passed is the caller's to dispose; one made from a URL is ours.
        self._owns_engine = not isinstance(engine_or_url, AsyncEngine)
        self.engine: AsyncEngine = (
            engine_or_url
            if isinstance(engine_or_url, AsyncEngine)
            else create_engine(engine_or_url, **pool_options(engine_or_url, concurrency))
        )
        # A claim and a batch of completions are one statement each, atomic on their own:
        # without BEGIN/COMMIT around them they cost one round trip instead of three.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.tasks = task_map(tasks)
        self.queues = serve_queues(queues, self.tasks)
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
        self._executing: dict[uuid.UUID, asyncio.Task[Any]] = {}
        self._cancel_reasons: dict[uuid.UUID, str] = {}
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        self._sync_engine_lock = threading.Lock()
        self._completer = Completer(self.engine, self._autocommit, self._statements, self.id)
        self._claims: dict[int, Any] = {}
        self._next_due = self._statements.next_due(queues=self.queues)
        self._listener: Listener | None = None
        self.heartbeat = Heartbeat(
            url=self.engine.url,
            statements=self._statements,
            worker_id=self.id,
            queues=self.queues,
            interval=heartbeat_interval,
            timeout=heartbeat_timeout,
            decide_lost=self._decide_lost,
            cancel=self._cancel_threadsafe,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.jobs_processed = 0

    @property
    def was_forced(self) -> bool:
        """Tell whether the last run was cut short by a second signal (or `stop(force=True)`)."""
        return self._forced.is_set()

    @property
    def is_listening(self) -> bool:
        """Tell whether the worker currently receives PostgreSQL notifications of new jobs."""
        return self._listener is not None and self._listener.connected.is_set()

    def _decide_lost(self, name: str, error_count: int, error: str) -> Retry | DeadLetter:
        """Decide, as for any failure, what becomes of a job whose worker died."""
        task_class = self.tasks.get(name) or registered_tasks().get(name)
        return failure_outcome(
            error,
            error_count=error_count,
            task_class=task_class,
            default_max_retries=self.max_retries,
        )

    def _sync_engine_for_jobs(self) -> Engine:
        """Return the engine of `ctx.transaction()` in sync jobs, made on first use."""
        # Called from the job threads, several at once.
        with self._sync_engine_lock:
            if self._sync_engine is None:
                url = self.engine.url
                if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
                    raise ConfigurationError(
                        "a sync job's ctx.transaction() needs a SQLite file: an in-memory "
                        "database is private to the worker's async engine"
                    )
                self._sync_engine = create_sync_engine(url, **pool_options(url, self.concurrency))
            return self._sync_engine

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
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sqla_jobs")
        helpers = [asyncio.create_task(self._completer.run(self._stopping))]
        if not until_idle and self.engine.dialect.name == "postgresql":
            self._listener = Listener(
                self.engine.url, self.queues, self._wake_threadsafe, self._cancel_threadsafe
            )
            helpers.append(asyncio.create_task(self._listener.run(self._stopping)))
        unsubscribe = wakeup.subscribe(self._wake_threadsafe)
        await self.heartbeat.start()
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
                await self._shut_down(helpers)
            finally:
                unsubscribe()
                remove_handlers()

    def _wake_threadsafe(self) -> None:
        """Wake the claim loop; callable from any thread (commits can happen anywhere)."""
        if threading.get_ident() == self._loop_thread:
            # NOTIFY callbacks run on the loop itself: skip the self-pipe round (latency).
            self._wakeup.set()
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wakeup.set)

    def _cancel_threadsafe(self, job_id: uuid.UUID, reason: str) -> None:
        """Cancel job `job_id` if this worker runs it; callable from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel, job_id, reason)

    def _cancel(self, job_id: uuid.UUID, reason: str) -> None:
        task = self._executing.get(job_id)
        if task is None or job_id in self._cancel_reasons:
            return  # not ours, not running any more, or already being cancelled
        self._cancel_reasons[job_id] = reason
        task.cancel()

    async def _claim_loop(self, *, until_idle: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = self.concurrency - len(self._running)
            if 0 < free < max(1, self.concurrency // 4):
                # Busy: let a few more jobs finish so one round trip claims several.
                await asyncio.sleep(CLAIM_COOLDOWN.total_seconds())
                free = self.concurrency - len(self._running)
            claimed = 0
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except DATABASE_ERRORS as exc:
                    failures += 1
                    await self._back_off("claim failed", exc, failures)
                    continue
                failures = 0
                if claimed == free:
                    continue
            if until_idle and claimed == 0 and not self._running:
                return
            await self._sleep(await self._idle_time(free, claimed))

    async def _claim(self, limit: int) -> int:
        # Building the statement costs more than running it; there are `concurrency` variants.
        statement = self._claims.get(limit)
        if statement is None:
            statement = self._claims[limit] = self._statements.claim_jobs(
                worker_id=self.id, queues=self.queues, limit=limit
            )
        async with self._autocommit.connect() as connection:
            rows = (await connection.execute(statement)).all()
        self._log.debug("claimed jobs", count=len(rows), limit=limit)
        for row in rows:
            self._start(ClaimedJob(*row))
        if rows:
            # Let the new jobs start before this loop does anything else (latency).
            await asyncio.sleep(0)
        return len(rows)

    async def _idle_time(self, free: int, claimed: int) -> timedelta:
        """Return how long to sleep: until the next job is due, at most `poll_interval`."""
        if free == 0 or claimed == free:
            return self.poll_interval
        try:
            async with self.engine.connect() as connection:
                earliest, now = (await connection.execute(self._next_due)).one()
        except DATABASE_ERRORS:
            return self.poll_interval  # the next claim reports the trouble
        if earliest is None:
            return self.poll_interval
        return max(min(earliest - now, self.poll_interval), timedelta(milliseconds=1))

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
            completion = JobCompletion(
                # Built only if the job opens a transaction: most jobs never do.
                delete=partial(self._statements.complete_jobs, worker_id=self.id, job_ids=[job.id]),
                engine=self.engine,
                sync_engine=self._sync_engine_for_jobs,
                loop=asyncio.get_running_loop(),
            )
            ctx = JobContext.for_job(
                job, worker_id=self.id, state=self.state, completion=completion
            )
            me = asyncio.current_task()
            assert me is not None
            self._executing[job.id] = me
            try:
                outcome: Outcome = await execute(
                    job,
                    ctx,
                    tasks=self.tasks,
                    default_max_retries=self.max_retries,
                    executor=self._executor,
                )
            except asyncio.CancelledError:
                reason = self._cancel_reasons.get(job.id)
                if reason is None:
                    self._log.warning("job cancelled by shutdown; its lock is released")
                    raise
                # Cancelled on request, not by shutdown: this task goes on to record it.
                me.uncancel()
                self._log.warning("job cancelled by request", reason=reason)
                error = f"cancelled: {reason}"
                outcome = (
                    CompletedInTransaction(error=error)
                    if ctx.is_completed
                    else DeadLetter(error=error)
                )
            finally:
                del self._executing[job.id]
                self._cancel_reasons.pop(job.id, None)
            await self._completer.record(job.id, outcome, attempts=RECORD_ATTEMPTS)

    async def _shut_down(self, helpers: list[asyncio.Task[None]]) -> None:
        self._stopping.set()
        if self._running and not self._forced.is_set():
            self._log.info("waiting for running jobs", count=len(self._running))
            await self._wait_for_running(self.shutdown_timeout)
        for task in list(self._executing.values()):
            task.cancel()
        # Cancelled jobs end at once; jobs writing their outcome get a moment to commit it.
        await self._wait_for_running(timedelta(seconds=5), until_forced=False)
        # Helpers end on `_stopping`; cancelling one inside a database call could leave its
        # connection unreturned, so that is the last resort.
        self._completer.wake()
        _, stuck = await asyncio.wait(helpers, timeout=5)
        for helper in stuck:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        # Completions first: a released job that had succeeded would run again.
        await self._completer.flush(attempts=RECORD_ATTEMPTS)
        await self._release_locks()
        await self.heartbeat.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        with self._sync_engine_lock:
            sync_engine, self._sync_engine = self._sync_engine, None
        if sync_engine is not None:
            await asyncio.to_thread(sync_engine.dispose)
        if self._owns_engine:
            await self.engine.dispose()
        self._listener = None
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
        release = self._statements.release_locks(worker_id=self.id)
        wake_others = self._statements.wake_workers_for_held_jobs(worker_id=self.id)
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as connection:
                    if wake_others is not None:
                        await connection.execute(wake_others)
                    released = (await connection.execute(release)).rowcount
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
        delay = backoff_delay(failures)
        self._log.warning(
            what, error=summarize_error(str(exc)), failures=failures, retry_in=delay.total_seconds()
        )
        await self._sleep(delay)

    async def _sleep(self, delay: timedelta) -> None:
        """Sleep up to `delay`, waking early when a job finishes, arrives, or the worker stops."""
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
