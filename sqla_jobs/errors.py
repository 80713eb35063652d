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
    ├── EnqueueError
    │   └── PayloadError
    └── JobControl          raised by a job's `run` to decide its fate
        ├── Snooze
        ├── Discard
        └── Retry
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from .retry import MAX_RETRY_DELAY


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


class JobControl(SqlaJobsError):
    """A job's `run` asked for something other than success or an ordinary failure."""


class Snooze(JobControl):
    """Run this job again after `delay`, without counting a failure.

    The snooze is counted instead: past its task's `max_snoozes` (100 unless set), the job is
    dead-lettered.

    >>> raise Snooze(timedelta(minutes=5))  # the report is not ready yet
    """

    def __init__(self, delay: timedelta) -> None:
        self.delay = _check_delay(delay, "Snooze")
        super().__init__(f"snoozed for {delay.total_seconds():g} s")


class Discard(JobControl):
    """Move this job to the dead-letter table now, without retrying it.

    >>> raise Discard("the account was deleted")
    """

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason:
            raise ValueError("Discard(reason) takes a non-empty string")
        self.reason = reason
        super().__init__(reason)


class Retry(JobControl):
    """Fail this attempt and retry after `delay` (None: the task's backoff).

    It counts as a failed attempt: once the job's retries are spent, it is dead-lettered.

    >>> raise Retry(delay=timedelta(seconds=30), reason="rate limited") from exc
    """

    def __init__(self, *, delay: timedelta | None = None, reason: str = "retry requested") -> None:
        self.delay = None if delay is None else _check_delay(delay, "Retry")
        self.reason = reason
        super().__init__(reason)


def _check_delay(delay: object, name: str) -> timedelta:
    if not isinstance(delay, timedelta) or not timedelta(0) <= delay <= MAX_RETRY_DELAY:
        raise ValueError(f"{name}(delay) takes a timedelta between 0 and 2**32 seconds")
    return delay
