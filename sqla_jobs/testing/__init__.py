"""Helpers for an application's own tests: what did my code enqueue, and run it.

`assert_enqueued`, `refute_enqueued` and `all_enqueued` look inside the caller's session: jobs
added but not flushed, flushed but not committed, and committed alike, so a test that rolls
back at its end sees what it enqueued. `perform` runs one task inline; `drain` runs every due
job through a real `Worker`. Given a sync `Session` (or `Engine`) each returns its answer; given
an `AsyncSession` (or `AsyncEngine`) it returns an awaitable:

>>> assert_enqueued(session, SendEmail, to="a@example.com")
>>> await assert_enqueued(async_session, SendEmail, to="a@example.com")
"""

from __future__ import annotations

from sqla_jobs.errors import JobFailedError as JobFailedError
from sqla_jobs.testing.enqueued import all_enqueued as all_enqueued
from sqla_jobs.testing.enqueued import assert_enqueued as assert_enqueued
from sqla_jobs.testing.enqueued import refute_enqueued as refute_enqueued
from sqla_jobs.testing.running import DrainSummary as DrainSummary
from sqla_jobs.testing.running import JobFailure as JobFailure
from sqla_jobs.testing.running import drain as drain
from sqla_jobs.testing.running import perform as perform

__all__ = [
    "DrainSummary",
    "JobFailedError",
    "JobFailure",
    "all_enqueued",
    "assert_enqueued",
    "drain",
    "perform",
    "refute_enqueued",
]
