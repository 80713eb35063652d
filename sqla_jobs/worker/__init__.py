"""The worker: claim due jobs, run them concurrently, write their outcomes back, shut down cleanly.

Data flows one way: the claim loop (`claim_loop`) claims rows under the worker's lease (`lease`)
→ the runner (`runner`) runs each job (`execution` decides its outcome) → the recorder
(`recorder`) writes the outcome back through the store. Beside them, `maintenance` (with the
`rescuer`) runs at each heartbeat, the `scheduler` enqueues periodic jobs, the store's listener
wakes the claim loop on NOTIFY, and `shutdown` stops everything in order. This module only
builds and wires those parts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from loguru import logger
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs import wakeup
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.hooks import JobHooks, OnJobEnd, OnJobStart, load_hooks
from sqla_jobs.periodic import Periodic, checked_schedules, registered_schedules
from sqla_jobs.settings import Settings
from sqla_jobs.store import create_worker_engine
from sqla_jobs.store.listener import Listener
from sqla_jobs.tasks import Task
from sqla_jobs.urls import display_url
from sqla_jobs.worker import signals
from sqla_jobs.worker.assembly import assemble
from sqla_jobs.worker.metrics_port import serve_metrics, with_metrics
from sqla_jobs.worker.scope import serve_queues, task_map
from sqla_jobs.worker.shutdown import Shutdown
from sqla_jobs.worker_options import WorkerOptions

# How long a start waits, after its lease registered, for the claim's connection to be opened.
PREPARE_WAIT = timedelta(seconds=1)

_UNSET: Any = object()


class Worker:
    """Run the jobs of a database's queues.

    `engine_or_url` is an `AsyncEngine` or a URL (plain ``postgresql://`` URLs run on asyncpg).
    `tasks` defaults to every registered `Task`; `queues` to the queues of those tasks: a list
    of queues shares `concurrency` slots, while ``{"mail": 5, "default": 20}`` gives each queue
    slots of its own, so a busy queue never takes another's. `queue_limits` (``{"payments":
    2}``) are stored in the database at start: no more than that many jobs of the queue run at
    once across every worker. `state` is handed to every job as `ctx.state`. `periodic` lists
    the schedules this worker enqueues (see `sqla_jobs.periodic`); it defaults to the
    registered schedules of the tasks in `tasks`. `on_job_start`, `on_job_end` and `hooks` are
    called around each job (`sqla_jobs.hooks`). The other options are those of `WorkerOptions`.

    >>> worker = Worker("postgresql://app@db/app", concurrency=20, state=clients)
    >>> worker = Worker(url, queues={"mail": 5, "default": 20}, queue_limits={"payments": 2})
    >>> await worker.run()            # until worker.stop(), SIGTERM or SIGINT
    >>> await worker.run_until_idle() # or: run every due job, then return
    """

    def __init__(
        self,
        engine_or_url: AsyncEngine | str | URL,
        *,
        tasks: Iterable[type[Task]] | None = None,
        queues: Sequence[str] | Mapping[str, int] | None = None,
        concurrency: int = _UNSET,
        queue_limits: Mapping[str, int] | None = None,
        state: Any = None,
        poll_interval: timedelta = _UNSET,
        shutdown_timeout: timedelta = _UNSET,
        max_retries: int = _UNSET,
        heartbeat_interval: timedelta = _UNSET,
        heartbeat_timeout: timedelta = _UNSET,
        worker_id: str | None = None,
        handle_signals: bool = True,
        periodic: Iterable[Periodic] | None = None,
        hooks: Iterable[object] = (),
        on_job_start: OnJobStart | Iterable[OnJobStart] | None = None,
        on_job_end: OnJobEnd | Iterable[OnJobEnd] | None = None,
        metrics_port: int | None = _UNSET,
    ) -> None:
        given = dict(concurrency=concurrency, poll_interval=poll_interval, max_retries=max_retries)
        given |= dict(shutdown_timeout=shutdown_timeout, heartbeat_interval=heartbeat_interval)
        given |= dict(heartbeat_timeout=heartbeat_timeout, metrics_port=metrics_port)
        if queues is not None:
            if isinstance(queues, str):
                raise ConfigurationError("queues must be a sequence of queue names, not a string")
            given["queues"] = queues
        if queue_limits is not None:
            given["queue_limits"] = queue_limits
        options = WorkerOptions.checked(**{k: v for k, v in given.items() if v is not _UNSET})
        self.options = options
        self.tasks = task_map(tasks)
        # Queues given here but empty are a mistake serve_queues names; from settings, empty
        # means the tasks' queues.
        self.queues = serve_queues(
            options.queue_names if queues is not None else options.queue_names or None, self.tasks
        )
        self.queue_concurrency = options.queue_concurrency
        """Each queue's own slots, or None: the queues share `concurrency` slots."""
        # An engine the caller passed is the caller's to dispose; one made from a URL is ours.
        self._owns_engine = not isinstance(engine_or_url, AsyncEngine)
        self.engine: AsyncEngine = (
            engine_or_url
            if isinstance(engine_or_url, AsyncEngine)
            else create_worker_engine(engine_or_url, concurrency=options.total_concurrency)
        )
        self.state = state
        self.schedules = (
            checked_schedules(periodic)
            if periodic is not None
            else tuple(s for s in registered_schedules().values() if s.task_name in self.tasks)
        )
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.handle_signals = handle_signals
        hooks = with_metrics(hooks, options.metrics_port)  # a metrics port adds its hooks
        self.hooks = JobHooks.of(hooks, on_job_start=on_job_start, on_job_end=on_job_end)
        self.supervisor_pid: int | None = None  # set in --processes children: signals.install
        self._stopping = asyncio.Event()
        self._build()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        tasks: Iterable[type[Task]] | None = None,
        state: Any = None,
        handle_signals: bool = True,
    ) -> Worker:
        """Build a worker from `Settings` (database URL and worker options).

        >>> worker = Worker.from_settings(Settings(), state=clients)
        """
        options = settings.worker_options()
        return cls(
            settings.database_url.get_secret_value(),
            tasks=tasks,
            state=state,
            handle_signals=handle_signals,
            hooks=load_hooks(settings.hooks),
            **options.model_dump(exclude={"queues"}),
            queues=options.queues or None,
        )

    def _build(self) -> None:
        parts = assemble(self, stopping=self._stopping, wake=self._wake)
        self.store, self.lease, self.recorder, self.runner = (
            parts.store,
            parts.lease,
            parts.recorder,
            parts.runner,
        )
        self.claim_loop, self.rescuer, self.maintenance, self.scheduler = (
            parts.claim_loop,
            parts.rescuer,
            parts.maintenance,
            parts.scheduler,
        )
        self._listener: Listener | None = None
        self._exit_code = 0

    @property
    def concurrency(self) -> int:
        """Jobs run at once (with per-queue slots: their sum)."""
        return self.options.total_concurrency

    @property
    def jobs_processed(self) -> int:
        """Jobs this worker has run since it was made, whatever their outcome."""
        return self.runner.jobs_processed

    @property
    def outcomes(self) -> Counter[str]:
        """How many jobs ended with each outcome: ``Completed``, ``Retry``, ``Snoozed``, …"""
        return self.runner.tally.outcomes

    @property
    def failures(self) -> deque[tuple[uuid.UUID, str, str]]:
        """(job id, task name, error) of the latest failed attempts (Retry, DeadLetter)."""
        return self.runner.tally.failures

    @property
    def was_forced(self) -> bool:
        """Tell whether the last run was cut short by a second signal (or `stop(force=True)`)."""
        return self.runner.forced.is_set()

    @property
    def exit_code(self) -> int:
        """0 after a clean stop; 1 if it was forced, left a job locked, or lost its lease thread."""
        return self._exit_code

    @property
    def is_listening(self) -> bool:
        """Tell whether the worker currently receives PostgreSQL notifications of new jobs."""
        return self._listener is not None and self._listener.connected.is_set()

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and starting jobs; running jobs get `shutdown_timeout` to finish (none
        with `force`). Jobs claimed and not started yet are released by the shutdown."""
        self._stopping.set()
        # At once, not when the shutdown begins: a claim in flight may still return jobs.
        self.runner.stop_starting()
        if force:
            self.runner.forced.set()
        self._wake()

    async def run(self) -> None:
        """Work until `stop()` is called or the process gets SIGTERM or SIGINT.

        The first signal stops claiming and lets running jobs finish for up to
        `shutdown_timeout`; then async jobs are cancelled and their locks released, so other
        workers can claim them. A job whose code cannot be stopped keeps its lock until it
        returns; a second signal stops waiting for it (it is then rescued after
        `heartbeat_timeout`).
        """
        await self._serve(until_idle=False)

    async def run_until_idle(self) -> int:
        """Run every job that is due (including ones those jobs enqueue), then return.

        Returns the number of jobs processed, whatever their outcome (see `outcomes`).
        Periodic schedules are not run: their jobs are enqueued by `run()` only.
        """
        before = self.jobs_processed
        await self._serve(until_idle=True)
        return self.jobs_processed - before

    async def _serve(self, *, until_idle: bool) -> None:
        self._stopping.clear()
        self.runner.forced.clear()
        self._exit_code = 0
        self.runner.open()
        enabled = self.handle_signals and not until_idle
        # Before the metrics port or the registration shows the worker to anyone: a signal from
        # then on stops it gracefully, never kills it half-started (exit status 143).
        remove_handlers = signals.install(self, self._stopping, self.supervisor_pid, enabled)
        try:
            await self._start_and_claim(until_idle=until_idle)
        finally:
            # Handlers stay during the shutdown: a second signal there means "now".
            remove_handlers()

    async def _start_and_claim(self, *, until_idle: bool) -> None:
        # Before the first claim, so that this worker's own claims obey its limits already.
        await self.store.set_queue_limits(self.options.queue_limits)
        metrics = await serve_metrics(self.engine, self.options.metrics_port, self._stopping)
        helpers = [asyncio.create_task(self.recorder.run(self._stopping)), *metrics]
        if not until_idle and self.store.dialect == "postgresql":
            self._listener = Listener(self.engine.url, self.queues, self._wake, self.runner.cancel)
            helpers.append(asyncio.create_task(self._listener.run(self._stopping)))
        unsubscribe = wakeup.subscribe(self.claim_loop.wake)
        self.store.pin_connections()  # returned by `_close_store`
        # Beside the lease's registration, not after it (15 ms of every start). Awaited a
        # moment at most: a database slow to accept connections is the first claim's to report.
        preparing = asyncio.create_task(self.store.prepare_claims(self.queues))
        helpers.append(preparing)
        await self.lease.start()
        await asyncio.wait([preparing], timeout=PREPARE_WAIT.total_seconds())
        helpers.append(asyncio.create_task(self.maintenance.run(self._stopping)))
        if not until_idle:
            helpers.append(asyncio.create_task(self.scheduler.run(self._stopping)))
        logger.info(
            "worker started",
            worker_id=self.id,
            database=display_url(self.engine.url),
            queues=list(self.queues),
            concurrency=self.concurrency,
            queue_concurrency=self.queue_concurrency,
            queue_limits=self.options.queue_limits,
            tasks=sorted(self.tasks),
        )
        try:
            await self.claim_loop.run(until_idle=until_idle)
        except Exception:
            self._exit_code = 1
            raise
        finally:
            try:
                await self._shut_down(helpers)
            finally:
                unsubscribe()

    async def _shut_down(self, helpers: list[asyncio.Task[None]]) -> None:
        self._stopping.set()
        shutdown = Shutdown(
            self.store,
            runner=self.runner,
            recorder=self.recorder,
            lease=self.lease,
            shutdown_timeout=self.options.shutdown_timeout,
        )
        await shutdown.stop_jobs()
        self.recorder.wake()
        # Helpers end on `_stopping`; cancelling one inside a database call could leave its
        # connection unreturned, so that is the last resort.
        _, stuck = await asyncio.wait(helpers, timeout=5)
        for helper in stuck:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await shutdown.let_go()
        await asyncio.gather(shutdown.end_lease(), self.runner.close(), self._close_store())
        self._listener = None
        if self.was_forced or not shutdown.is_clean or self.lease.died is not None:
            self._exit_code = 1
        logger.info("worker stopped", jobs_processed=self.jobs_processed, exit_code=self._exit_code)

    async def _close_store(self) -> None:
        # The store's pinned connections go back to the pool first, also to a caller's engine.
        await self.store.close()
        if self._owns_engine:
            await self.engine.dispose()

    def _wake(self) -> None:
        self.claim_loop.wake()
