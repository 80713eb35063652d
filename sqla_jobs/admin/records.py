"""What the admin read operations return: plain, frozen values, safe to keep after the session.

Every instant is timezone-aware UTC; every age is in seconds, measured by the database's clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .states import JobState


@dataclass(frozen=True)
class JobSummary:
    """One line of a listing: a job (any state but dead) or a dead letter (state `DEAD`)."""

    id: uuid.UUID
    """The job's id; for a dead letter, the dead letter's own id (what retry and purge take)."""
    name: str
    queue: str
    priority: int
    state: JobState
    attempts: int
    """Failed runs so far (`error_count`)."""
    created_at: datetime
    run_at: datetime | None
    """When it is (or was) due; None for a dead letter."""
    failed_at: datetime | None
    """The last failure (for a dead letter: when it died); None if it never failed."""
    locked_by: str | None
    """The worker running it, if any."""
    error: str | None
    """The last line of the last error (exception type and message), if any."""


@dataclass(frozen=True)
class JobDetail(JobSummary):
    """Everything stored about one job or dead letter (`get_job`)."""

    payload: dict[str, Any]
    context: str
    error_text: str | None
    """The last error in full: message and traceback."""
    locked_at: datetime | None
    cancel_reason: str | None
    unique_key: str | None
    timeout_seconds: float | None
    snooze_count: int
    original_job_id: uuid.UUID | None
    """For a dead letter, the id the job had in the job table; None for a job."""


@dataclass(frozen=True)
class QueueStats:
    """The jobs of one queue by state, and how long its oldest due job has waited."""

    queue: str
    due: int = 0
    scheduled: int = 0
    retrying: int = 0
    running: int = 0
    cancelled: int = 0
    dead: int = 0
    oldest_due_age: float | None = None
    """Seconds since the oldest due job became due; None when no job is due."""
    max_running: int | None = None
    """The queue's cluster-wide limit (`set_queue_limit`); 0 is paused; None: no limit."""


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker process, from its row in ``sqla_jobs_worker``."""

    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    """Seconds since its last heartbeat."""
    running_jobs: int
    """Jobs locked under its id."""
    is_alive: bool
    """Its heartbeat is younger than the `heartbeat_timeout` asked for."""


@dataclass(frozen=True)
class CheckResult:
    """One health check: its name, whether it passed, one sentence saying what was found."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """The results of `check()`, in order; healthy when every one passed."""

    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        """Tell whether every check passed."""
        return all(result.ok for result in self.results)
