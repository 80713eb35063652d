"""Build a worker's parts and wire them to each other (the `Worker` face only holds them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.hooks import JobHooks
from sqla_jobs.periodic import Periodic
from sqla_jobs.store import JobStore
from sqla_jobs.tasks import Task
from sqla_jobs.worker.claim_loop import ClaimLoop
from sqla_jobs.worker.lease import Lease
from sqla_jobs.worker.maintenance import Maintenance
from sqla_jobs.worker.recorder import OutcomeRecorder
from sqla_jobs.worker.rescuer import Rescuer
from sqla_jobs.worker.runner import JobRunner
from sqla_jobs.worker.scheduler import Scheduler
from sqla_jobs.worker_options import WorkerOptions


class WorkerSpec(Protocol):
    """What the parts are built from: a `Worker`'s settled configuration."""

    @property
    def engine(self) -> AsyncEngine: ...
    @property
    def id(self) -> str: ...
    @property
    def tasks(self) -> Mapping[str, type[Task]]: ...
    @property
    def queues(self) -> Sequence[str]: ...
    @property
    def state(self) -> Any: ...
    @property
    def options(self) -> WorkerOptions: ...
    @property
    def schedules(self) -> Sequence[Periodic]: ...
    @property
    def queue_concurrency(self) -> Mapping[str, int] | None: ...
    @property
    def hooks(self) -> JobHooks | None: ...


@dataclass(frozen=True)
class Parts:
    """A worker's parts, each owning one duty."""

    store: JobStore
    lease: Lease
    recorder: OutcomeRecorder
    runner: JobRunner
    claim_loop: ClaimLoop
    rescuer: Rescuer
    maintenance: Maintenance
    scheduler: Scheduler


def assemble(spec: WorkerSpec, *, stopping: asyncio.Event, wake: Callable[[], None]) -> Parts:
    """Build the parts of the worker `spec` describes; `wake` wakes its claim loop."""
    options = spec.options
    store = JobStore(spec.engine)
    lease = Lease(
        url=spec.engine.url,
        worker_id=spec.id,
        queues=spec.queues,
        interval=options.heartbeat_interval,
        timeout=options.heartbeat_timeout,
    )
    recorder = OutcomeRecorder(store, on_caught_up=wake)
    runner = JobRunner(
        store=store,
        recorder=recorder,
        tasks=spec.tasks,
        state=spec.state,
        concurrency=options.total_concurrency,
        queue_concurrency=spec.queue_concurrency,
        default_max_retries=options.max_retries,
        on_slot_freed=wake,
        hooks=spec.hooks,
    )
    # The lease tells the runner which jobs are no longer this worker's; nothing else calls back.
    lease.on_lost = runner.disown
    claim_loop = ClaimLoop(
        store,
        runner=runner,
        lease=lease,
        queues=spec.queues,
        poll_interval=options.poll_interval,
        stopping=stopping,
    )
    rescuer = Rescuer(
        store,
        tasks=spec.tasks,
        heartbeat_timeout=options.heartbeat_timeout,
        default_max_retries=options.max_retries,
        tally=runner.tally,
        hooks=spec.hooks,
    )
    maintenance = Maintenance(
        store,
        lease=lease,
        runner=runner,
        recorder=recorder,
        rescuer=rescuer,
        claim_lock=claim_loop.lock,
        interval=options.heartbeat_interval,
    )
    scheduler = Scheduler(store, schedules=spec.schedules, on_enqueued=wake)
    return Parts(store, lease, recorder, runner, claim_loop, rescuer, maintenance, scheduler)
