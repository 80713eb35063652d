"""What a running job sees: the claimed row (`ClaimedJob`) and the `JobContext` given to `run`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import TransactionUsageError
from .transaction import JobCompletion, JobTransaction


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
    _completion: JobCompletion | None = field(default=None, kw_only=True, repr=False, compare=False)
    """Set by the worker: what `transaction()` needs, and whether it has completed the job."""

    @property
    def attempt(self) -> int:
        """The number of this attempt, starting at 1."""
        return self.error_count + 1

    @property
    def is_completed(self) -> bool:
        """Tell whether `transaction()` has committed, deleting the job's row with its writes."""
        return self._completion is not None and self._completion.is_committed

    def transaction(self) -> JobTransaction:
        """Return a transaction whose commit also completes (deletes) this job, exactly once.

        Writes made in it are kept only if this worker still holds the job at commit; if another
        worker took it over, nothing is kept and `LockLostError` is raised. An exception in the
        block rolls everything back and the job fails as usual. Once committed, the job is done:
        it is neither deleted again nor retried, even if `run` raises afterwards.

        >>> async def run(self, ctx: JobContext) -> None:
        ...     async with ctx.transaction() as session:  # `with` in a plain `def run`
        ...         session.add(Invoice(order_id=self.order_id))
        """
        if self._completion is None:
            raise TransactionUsageError(
                "ctx.transaction() needs a job run by a Worker; this context has no worker"
            )
        return JobTransaction(self._completion)

    @classmethod
    def for_job(
        cls,
        job: ClaimedJob,
        *,
        worker_id: str,
        state: Any,
        completion: JobCompletion | None = None,
    ) -> JobContext:
        """Build the context of `job` as run by `worker_id`; `completion` enables transaction()."""
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
            _completion=completion,
        )
