"""Backoff policy: how long a failed job waits before its next attempt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

Backoff = Callable[[int], timedelta]
"""Maps the number of failures so far (before this one) to the delay before the next attempt."""

# 2**32 s is over a century; larger exponents only risk overflowing timedelta.
_MAX_EXPONENT = 32


def exponential_backoff(error_count: int) -> timedelta:
    """Return ``2 ** (error_count + 1)`` seconds: 2 s, 4 s, 8 s, … as the reference worker does.

    >>> exponential_backoff(0), exponential_backoff(2)
    (datetime.timedelta(seconds=2), datetime.timedelta(seconds=8))
    """
    return timedelta(seconds=2 ** min(max(error_count, 0) + 1, _MAX_EXPONENT))


def is_exhausted(error_count: int, max_retries: int) -> bool:
    """Tell whether a job that just failed with `error_count` earlier failures gives up now.

    A job runs once and is retried `max_retries` times; the failure of its last retry
    (``error_count == max_retries``) moves it to the dead-letter table.
    """
    return error_count >= max_retries


MAX_RETRY_DELAY = timedelta(seconds=2**_MAX_EXPONENT)
"""The longest delay a backoff may ask for (about 136 years: the default policy's own cap)."""
