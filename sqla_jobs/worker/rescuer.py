"""The rescuer: end the leases of silent workers, and free the jobs no live lease explains.

After River's maintenance services and oban-py's lifeline, every worker runs it (no leader):
first the registrations silent for `heartbeat_timeout` are deleted, which ends their leases;
then every job locked by a worker id that has no registration, locked more than
`heartbeat_timeout` ago (the dead workers' jobs, and locks no registration explains), is
retried or dead-lettered as one failed attempt ("worker lost"). So a job that kills its worker
ends in the dead-letter table after its retries instead of killing workers forever.

Each job is handled in its own transaction, guarded by the lost owner's id: one row the database
refuses does not hold back the others, and two rescuers never both rescue one job.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from loguru import logger

from sqla_jobs.execution import lost_outcome
from sqla_jobs.hooks import JobEnd, JobHooks, starting_now
from sqla_jobs.store import JobStore, LostJob
from sqla_jobs.store.retrying import DATABASE_ERRORS, summarize_error
from sqla_jobs.tasks import Task, registered_tasks
from sqla_jobs.worker.tally import JobTally

RESCUE_BATCH = 100


class Rescuer:
    """Rescue the jobs of dead workers, as failed attempts."""

    def __init__(
        self,
        store: JobStore,
        *,
        tasks: Mapping[str, type[Task]],
        heartbeat_timeout: timedelta,
        default_max_retries: int,
        tally: JobTally | None = None,
        hooks: JobHooks | None = None,
    ) -> None:
        self._store = store
        self._tally = tally
        self._hooks = hooks
        self._tasks = tasks
        self._timeout = heartbeat_timeout
        self._default_max_retries = default_max_retries
        self.rescued = 0
        """Jobs of dead workers this worker has rescued."""

    async def rescue(self) -> int:
        """Run one round: end silent leases, rescue up to `RESCUE_BATCH` lost jobs."""
        dead = await self._store.declare_dead_workers(heartbeat_timeout=self._timeout)
        if dead:
            logger.warning("workers declared dead after their heartbeat timeout", workers=dead)
        lost = await self._store.lost_jobs(grace=self._timeout, limit=RESCUE_BATCH)
        rescued = 0
        for job in lost:
            rescued += await self._rescue(job)
        if rescued:
            self.rescued += rescued
            logger.warning("rescued jobs of dead workers", count=rescued)
        return rescued

    async def _rescue(self, job: LostJob) -> int:
        error = (
            f"worker lost: {job.locked_by} held no live lease (silent for "
            f"{self._timeout.total_seconds():g} s, or never registered) while running this job"
        )
        task_class = self._tasks.get(job.name) or registered_tasks().get(job.name)
        outcome = lost_outcome(
            name=job.name,
            error_count=job.error_count,
            error=error,
            cancel_reason=job.cancel_reason,
            task_class=task_class,
            default_max_retries=self._default_max_retries,
        )
        try:
            # Guarded by the lost owner's id: if another rescuer was first, nothing is written.
            written = await self._store.write_failure(
                owner=job.locked_by, job_id=job.id, outcome=outcome
            )
        except DATABASE_ERRORS as exc:
            logger.error(
                "rescuing a job failed; trying again next round",
                job_id=str(job.id),
                error=summarize_error(str(exc)),
            )
            return 0
        if not written:
            return 0
        if self._tally is not None:
            self._tally.add_minute(job.queue, job.name, "rescued", 0.0)
        if self._hooks is not None:
            await self._hooks.emit(_rescued_event(job, outcome.error))
        return 1


def _rescued_event(job: LostJob, error: str) -> JobEnd:
    start = starting_now(job, job.locked_by)
    return JobEnd(job=start, outcome="rescued", duration=None, error=error)
