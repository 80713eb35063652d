"""Exceptions raised by sqla_jobs.

The hierarchy::

    SqlaJobsError
    ├── ConfigurationError
    │   └── MigrationError
    ├── DuplicateTaskNameError
    ├── UnknownTaskError
    ├── JobTimeoutError
    ├── LockLostError
    ├── TransactionUsageError
    ├── JobFailedError
    └── EnqueueError
        └── PayloadError
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence


class SqlaJobsError(Exception):
    """Something went wrong in sqla_jobs."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(SqlaJobsError):
    """The worker or the settings are misconfigured."""


class MigrationError(ConfigurationError):
    """The sqla_jobs schema cannot be migrated: the database is unreachable, or refuses."""


class DuplicateTaskNameError(SqlaJobsError):
    """Two different Task classes claim the same name."""


class UnknownTaskError(SqlaJobsError):
    """No Task class is registered under this job's name."""


class JobTimeoutError(SqlaJobsError):
    """A job ran longer than its timeout."""


class LockLostError(SqlaJobsError):
    """This worker no longer holds the job (another worker took it over); nothing was committed."""


class TransactionUsageError(SqlaJobsError):
    """`ctx.transaction()` cannot be used this way."""


class JobFailedError(SqlaJobsError):
    """Jobs failed while `sqla_jobs.testing.drain(..., raise_failures=True)` ran them.

    `failures` holds (job id, task name, error text with traceback) of each failed attempt.
    """

    def __init__(self, failures: Sequence[tuple[uuid.UUID, str, str]], *, count: int) -> None:
        self.failures = tuple(failures)
        lines = [f"{count} job{'' if count == 1 else 's'} failed:"]
        for job_id, name, error in self.failures:
            lines.append(f"- job {job_id} ({name}):")
            lines.extend(f"    {line}" for line in error.rstrip().splitlines())
        if count > len(self.failures):
            lines.append(f"(and {count - len(self.failures)} more, whose errors were not kept)")
        super().__init__("\n".join(lines))


class EnqueueError(SqlaJobsError):
    """The job cannot be enqueued as asked."""


class PayloadError(EnqueueError):
    """The task's payload cannot be stored as JSON."""
