"""What a running job sees: the claimed row (`ClaimedJob`) and the `JobContext` given to `run`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job row as a worker claimed it: read once, never written back through this object."""

    id: uuid.UUID
    name: str
    payload: dict[str, Any]
    queue: str
    priority: int
    run_at: datetime
    created_at: datetime
    context: str
    error_count: int
    timeout_seconds: float | None = None
    """The time limit enqueue() set for this job; None: its task's `timeout` option."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """Facts about the running job, and the application's `state`, handed to `Task.run`."""

    job_id: uuid.UUID
    name: str
    queue: str
    priority: int
    error_count: int
    """Failed attempts before this one."""
    context: str
    """Why the job was enqueued, as given to `enqueue(context=...)`."""
    created_at: datetime
    run_at: datetime
    worker_id: str
    state: Any
    """Whatever the application gave the worker as `state` (its engine, its clients, …)."""

    @property
    def attempt(self) -> int:
        """The number of this attempt, starting at 1."""
        return self.error_count + 1

    @classmethod
    def for_job(cls, job: ClaimedJob, *, worker_id: str, state: Any) -> JobContext:
        """Build the context of `job` as run by `worker_id`."""
        return cls(
            job_id=job.id,
            name=job.name,
            queue=job.queue,
            priority=job.priority,
            error_count=job.error_count,
            context=job.context,
            created_at=job.created_at,
            run_at=job.run_at,
            worker_id=worker_id,
            state=state,
        )
