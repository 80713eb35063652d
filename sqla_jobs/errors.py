"""Exceptions raised by sqla_jobs.

The hierarchy::

    SqlaJobsError
    ├── ConfigurationError
    ├── DuplicateTaskNameError
    ├── UnknownTaskError
    ├── JobTimeoutError
    ├── LockLostError
    ├── TransactionUsageError
    └── EnqueueError
        └── PayloadError
"""

from __future__ import annotations


class SqlaJobsError(Exception):
    """Something went wrong in sqla_jobs."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(SqlaJobsError):
    """The worker or the settings are misconfigured."""


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


class EnqueueError(SqlaJobsError):
    """The job cannot be enqueued as asked."""


class PayloadError(EnqueueError):
    """The task's payload cannot be stored as JSON."""
