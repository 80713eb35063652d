"""The job runner: run claimed jobs in slots, and know which job's code is still running.

A slot stays busy until the job's code has really returned (a plain ``def run`` cannot be
stopped). The runner never runs two copies of one job, and hands each outcome to the recorder
under the lease that claimed the job; a job whose lease was lost is no longer its to record.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from loguru import logger

from sqla_jobs.context import ClaimedJob, JobContext
from sqla_jobs.execution import Outcome, cancelled_outcome, execute
from sqla_jobs.hooks import JobHooks
from sqla_jobs.store import JobStore
from sqla_jobs.tasks import Task
from sqla_jobs.transaction import TransactionBinding
from sqla_jobs.worker.ahead import ClaimAhead
from sqla_jobs.worker.recorder import OutcomeRecorder
from sqla_jobs.worker.running import RunningJob
from sqla_jobs.worker.tally import JobTally
from sqla_jobs.worker.threads import JobThreads


class JobRunner:
    """Run up to `concurrency` claimed jobs at once and record their outcomes.

    With `queue_concurrency`, each queue has slots of its own (`concurrency` is their sum), so
    a queue whose jobs are slow or stuck never takes another queue's slots.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        recorder: OutcomeRecorder,
        tasks: Mapping[str, type[Task]],
        state: Any,
        concurrency: int,
        queue_concurrency: Mapping[str, int] | None = None,
        default_max_retries: int,
        on_slot_freed: Callable[[], None],
        hooks: JobHooks | None = None,
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._tasks = tasks
        self._state = state
        self.concurrency = concurrency
        self.queue_concurrency = None if queue_concurrency is None else dict(queue_concurrency)
        """Each queue's own slots, or None: all queues share `concurrency` slots."""
        self._running_by_queue: Counter[str] = Counter()
        self._default_max_retries = default_max_retries
        self._on_slot_freed = on_slot_freed
        self._jobs: dict[uuid.UUID, RunningJob] = {}
        self._running = 0
        """Jobs started and not ended: the slots taken."""
        self._slots: set[asyncio.Task[None]] = set()
        """The tasks that run jobs (see `_serve_slots`)."""
        self._spare: asyncio.Task[None] | None = None
        """A task made to start the next waiting job, if it has not started one yet."""
        self._threads = JobThreads(store.engine.url, concurrency)
        self.forced = asyncio.Event()
        """Set by a forced shutdown: stop waiting for job threads that will not return."""
        self.jobs_processed, self.tally, self._hooks = 0, JobTally(), hooks
        # Claiming ahead needs one pool of slots: per-queue slots are claimed for exactly.
        self.ahead = ClaimAhead(concurrency if queue_concurrency is None else 0)
        self._starting = True

    @property
    def free_slots(self) -> int:
        """The number of jobs that may start now."""
        return self.concurrency - self._running

    @property
    def claimable(self) -> int:
        """The number of jobs to claim now: free slots and the room to claim ahead (see
        `ahead`), less the jobs claimed and not started yet; none while the recorder's deletes
        are behind."""
        if self._recorder.is_behind:
            return 0
        return max(0, self.free_slots + self.ahead.extra - len(self.ahead))

    def free_slots_by_queue(self) -> dict[str, int] | None:
        """Return the free slots of each queue that has its own, or None: one shared pool."""
        if self.queue_concurrency is None:
            return None
        # Jobs claimed and not started yet take their queue's slots too.
        waiting = self.ahead.count_by_queue()
        return {
            queue: max(0, slots - self._running_by_queue[queue] - waiting[queue])
            for queue, slots in self.queue_concurrency.items()
        }

    @property
    def is_busy(self) -> bool:
        """Tell whether any slot is taken, or any job claimed ahead waits for one."""
        return bool(self._running) or bool(self.ahead)

    def open(self) -> None:
        """Make the thread pool of plain ``def run`` jobs."""
        self._starting = True
        self._threads.open()

    def start(self, job: ClaimedJob, owner: str) -> None:
        """Start running `job`, claimed under the lease id `owner`, once a slot is free."""
        self.ahead.push(job, owner)
        self._make_spare()

    def stop_starting(self) -> None:
        """Start no more jobs (shutdown); jobs claimed ahead stay locked until the shutdown
        releases every lock of the worker's that no running job holds."""
        self._starting = False
        self.ahead.take_all()

    def _make_spare(self) -> None:
        """Make sure a task is about to start the next waiting job, if a slot is free for it.

        One spare task at a time: a job that awaits leaves the next job to the spare (which
        then makes the next spare), and a job that ends without awaiting lets its own task go
        on with the next job. So no job waits for another to end while a slot is free, and
        short jobs do not cost a task each.
        """
        if self._spare is None and self.ahead and self._starting and self.free_slots > 0:
            self._spare = asyncio.create_task(self._serve_slots())
            self._slots.add(self._spare)
            self._spare.add_done_callback(self._slot_task_ended)

    def _admit(self, job: ClaimedJob, owner: str) -> RunningJob | None:
        """Count `job` as running here, unless a copy of it still runs (then release it)."""
        if job.id in self._jobs:
            # A copy still runs here under a lost lease: never run two. The new claim is
            # released; the job is claimed again once this copy ends.
            logger.error(
                "job still running here under a lost lease; claim released", job_id=str(job.id)
            )
            self._release(owner, [job.id])
            return None
        run = RunningJob(job, owner)
        self._jobs[job.id] = run
        self._running += 1
        self._running_by_queue[job.queue] += 1
        return run

    def cancel(self, job_id: uuid.UUID, reason: str) -> None:
        """Cancel job `job_id` on request, if it runs here and is not being cancelled already.

        A job claimed ahead is released unstarted: no worker claims a cancelled job, and the
        maintenance moves it to the dead-letter table.
        """
        if (owner := self.ahead.remove(job_id)) is not None:
            logger.warning("job cancelled before it started", job_id=str(job_id), reason=reason)
            self._release(owner, [job_id])
            return
        run = self._jobs.get(job_id)
        if run is None or run.task is None or run.cancel_reason is not None or run.code_returned:
            return
        run.cancel_reason = reason
        run.task.cancel()

    def cancel_async_jobs(self) -> None:
        """Cancel every running async job (shutdown); their locks are released afterwards.

        Jobs running in a thread are left to finish: a thread cannot be stopped, and its result
        is recorded as usual when it returns (the worker keeps its lease meanwhile).
        """
        for run in self._jobs.values():
            if run.task is not None and run.thread is None and not run.code_returned:
                run.task.cancel()

    def disown(self, owner: str) -> None:
        """Treat the jobs claimed under the lost lease `owner` as no longer this worker's."""
        for waiting_owner, job_ids in self.ahead.take_all(owner).items():
            # Unstarted: released at once (guarded by `owner`), unless someone rescued them.
            self._release(waiting_owner, job_ids)
        for run in self._jobs.values():
            if run.owner == owner and not run.is_disowned:
                run.is_disowned = True
                logger.error(
                    "lease lost while the job ran; its outcome will not be recorded here",
                    job_id=str(run.job.id),
                )

    def held_ids(self, owner: str) -> set[uuid.UUID]:
        """Return the ids of the jobs held under `owner`: running, being recorded, or waiting."""
        held = {job_id for job_id, run in self._jobs.items() if run.owner == owner}
        return held | self.ahead.ids(owner) if self.ahead else held

    def code_running_ids(self) -> list[uuid.UUID]:
        """Return the ids of the jobs whose code may still be running."""
        return [job_id for job_id, run in self._jobs.items() if run.code_is_running]

    def code_running(self) -> Iterable[RunningJob]:
        """Return the jobs whose code may still be running."""
        return [run for run in self._jobs.values() if run.code_is_running]

    async def wait_for_slots(self, limit: float) -> None:
        """Wait up to `limit` seconds for every slot to be freed (outcomes recorded)."""
        if self._slots:
            await asyncio.wait(list(self._slots), timeout=limit)

    async def close(self) -> None:
        """Let go of the thread pool and the sync engine (threads still running are left be)."""
        await self._threads.close()

    async def _serve_slots(self) -> None:
        """Start waiting jobs one after the other while slots are free (see `_make_spare`).

        The task stops, and the next job gets a task of its own, when a job changed the
        task's context variables (the next job must not see them) or was cancelled on request.
        """
        slot = asyncio.current_task()
        assert slot is not None  # a task runs this
        context = contextvars.copy_context()
        while self._starting and self.ahead and self.free_slots > 0:
            run = self._admit(*self.ahead.pop())  # type: ignore[misc]  # not empty
            if self._spare is slot:
                self._spare = None
            if run is None:
                continue
            self._make_spare()
            run.task = slot
            try:
                await self._process(run)
            finally:
                self._job_ended(run)
            if run.cancel_reason is not None or not _same_context(context):
                return
        if self._spare is slot:
            self._spare = None

    def _job_ended(self, run: RunningJob) -> None:
        self._running -= 1
        self._running_by_queue[run.job.queue] -= 1
        if self._jobs.get(run.job.id) is run and not run.code_is_running:
            del self._jobs[run.job.id]
        self.jobs_processed += 1
        self._on_slot_freed()

    def _slot_task_ended(self, slot: asyncio.Task[None]) -> None:
        self._slots.discard(slot)
        if self._spare is slot:
            self._spare = None  # cancelled before it started a job
        self._make_spare()  # for jobs this task left waiting, if any
        if not slot.cancelled() and (exc := slot.exception()) is not None:
            # execute() turns job errors into outcomes, so this is a bug of ours: say so loudly.
            logger.opt(exception=exc).error("job processing crashed")

    async def _process(self, run: RunningJob) -> None:
        job = run.job
        with logger.contextualize(
            job_id=str(job.id), task=job.name, attempt=job.error_count + 1, worker_id=run.owner
        ):
            binding = TransactionBinding(
                # Built only if the job opens a transaction: most jobs never do.
                delete=partial(
                    self._store.delete_job_statement, worker_id=run.owner, job_id=job.id
                ),
                engine=self._store.engine,
                sync_engine=self._threads.sync_engine,
                loop=asyncio.get_running_loop(),
            )
            ctx = JobContext.for_job(
                job, worker_id=run.owner, state=self._state, transactions=binding
            )
            started = time.monotonic()
            try:
                if self._hooks is not None:
                    await self._hooks.job_started(job, run.owner)
                outcome: Outcome = await execute(
                    job,
                    ctx,
                    tasks=self._tasks,
                    default_max_retries=self._default_max_retries,
                    run_in_thread=partial(self._run_in_thread, run),
                )
            except asyncio.CancelledError:
                if run.cancel_reason is None:
                    # Shutdown: the lock is released only once the job's code has returned.
                    await self._until_code_returns(run)
                    run.code_returned = True
                    logger.warning("job cancelled by shutdown")
                    if self._hooks is not None:
                        await self._hooks.job_ended(job, "released", started, None)
                    raise
                # Cancelled on request: dead-letter it now, but keep the slot until a thread
                # that cannot be stopped has returned.
                asyncio.current_task().uncancel()  # type: ignore[union-attr]  # inside a task
                logger.warning("job cancelled by request", reason=run.cancel_reason)
                outcome = cancelled_outcome(run.cancel_reason, is_completed=ctx.is_completed)
                await self._finish(run, outcome, started)
                await self._until_code_returns(run)
                run.code_returned = True
                return
            run.code_returned = True
            await self._finish(run, outcome, started)

    async def _finish(self, run: RunningJob, outcome: Outcome, started: float) -> None:
        self.ahead.observe(time.monotonic() - started)
        name = self.tally.add(run.job, outcome, started, cancelled=run.cancel_reason is not None)
        if self._hooks is not None:
            await self._hooks.job_ended(run.job, name, started, outcome)
        if run.is_disowned:
            return
        await self._recorder.record(run.owner, run.job.id, outcome)

    def _release(self, owner: str, job_ids: list[uuid.UUID]) -> None:
        # Fire and forget: a release that fails leaves a stray lock for the reconciliation.
        asyncio.get_running_loop().create_task(
            self._store.release_jobs(worker_id=owner, job_ids=job_ids)
        )

    async def _run_in_thread(self, run: RunningJob, function: Callable[[], Any]) -> Any:
        run.thread = self._threads.submit(function)
        return await asyncio.wrap_future(run.thread)

    async def _until_code_returns(self, run: RunningJob) -> None:
        """Wait for a cancelled job's thread to return (a thread cannot be stopped), unless the
        shutdown is forced; the slot, and the job's lock, stay taken meanwhile."""
        thread = run.thread
        if thread is None or thread.done():
            return
        logger.warning("job cancelled; waiting for its thread to return")
        waiting = asyncio.ensure_future(asyncio.wrap_future(thread))
        forced = asyncio.ensure_future(self.forced.wait())
        try:
            while not thread.done() and not self.forced.is_set():
                try:
                    await asyncio.wait([waiting, forced], return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            forced.cancel()
            if not waiting.done():
                waiting.cancel()


def _same_context(context: contextvars.Context) -> bool:
    """Tell whether every context variable holds what it held in `context` (a snapshot)."""
    now = contextvars.copy_context()
    return len(now) == len(context) and all(
        value is now.get(variable, _MISSING) for variable, value in context.items()
    )


_MISSING = object()
