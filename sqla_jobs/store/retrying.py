"""One way to survive transient database trouble: retry with capped exponential backoff.

Every caller that talks to the database in the background (claims, outcome writes, the lease,
the listener, maintenance) uses `retry_database` or `backoff_delay`, so they all back off alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from loguru import logger

from sqla_jobs.database_errors import DATABASE_ERRORS as DATABASE_ERRORS
from sqla_jobs.database_errors import summarize_error as summarize_error

T = TypeVar("T")

MAX_BACKOFF = timedelta(seconds=10)


def backoff_delay(failures: int) -> timedelta:
    """Return the wait after `failures` consecutive database errors: 0.2 s doubling to 10 s."""
    return min(timedelta(seconds=0.1 * 2 ** min(max(failures, 1), 20)), MAX_BACKOFF)


class GaveUp(Exception):
    """`retry_database` ran out of attempts (or was stopped); `__cause__` is the last error."""


async def retry_database(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int | None = None,
    stopping: asyncio.Event | None = None,
) -> T:
    """Run `operation` until it succeeds, backing off after each database error.

    Gives up with `GaveUp` after `attempts` tries (None: never), or at the next backoff once
    `stopping` is set. Anything other than a database error propagates at once.
    """
    failures = 0
    while True:
        try:
            return await operation()
        except DATABASE_ERRORS as exc:
            failures += 1
            if (attempts is not None and failures >= attempts) or (
                stopping is not None and stopping.is_set()
            ):
                raise GaveUp(what) from exc
            delay = backoff_delay(failures)
            logger.warning(
                what,
                error=summarize_error(str(exc)),
                failures=failures,
                retry_in=delay.total_seconds(),
            )
            await sleep_unless(stopping, delay)


async def sleep_unless(stopping: asyncio.Event | None, delay: timedelta) -> None:
    """Sleep for `delay`, or until `stopping` is set."""
    if stopping is None:
        await asyncio.sleep(delay.total_seconds())
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay.total_seconds())
