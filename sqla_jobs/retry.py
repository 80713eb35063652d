"""Backoff policy: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

Backoff = Callable[[int], timedelta]
"""Maps the number of failures so far (before this one) to the delay before the next attempt."""

# 2**32 s is over a century; larger exponents only risk overflowing timedelta.
_MAX_EXPONENT = 32

MAX_RETRY_DELAY = timedelta(seconds=2**_MAX_EXPONENT)
"""The longest delay a backoff may ask for (about 136 years: the default policy's own cap)."""


def exponential_backoff(error_count: int) -> timedelta:
    """Return ``2 ** (error_count + 1)`` seconds: 2 s, 4 s, 8 s, … as the reference worker does.

    >>> exponential_backoff(0), exponential_backoff(2)
    (datetime.timedelta(seconds=2), datetime.timedelta(seconds=8))
    """
    return timedelta(seconds=2 ** min(max(error_count, 0) + 1, _MAX_EXPONENT))


def exponential_backoff_with_jitter(
    *,
    base: timedelta = timedelta(seconds=2),
    cap: timedelta = timedelta(hours=1),
    jitter: float = 0.25,
) -> Backoff:
    """Return a backoff of ``base * 2 ** error_count``, at most `cap`, shortened at random by
    up to the fraction `jitter` of itself (so retries of many jobs that failed together spread
    out instead of hitting the same service at the same instant).

    Every delay lies between ``(1 - jitter) * d`` and ``d``, where ``d = min(cap, base * 2 **
    error_count)``: `cap` is never exceeded. ``jitter=1`` is "full jitter" (0 to ``d``).

    >>> class Sync(Task, backoff=exponential_backoff_with_jitter(cap=timedelta(minutes=10))): ...
    """
    if not isinstance(base, timedelta) or base <= timedelta(0):
        raise ValueError("base must be a positive timedelta")
    if not isinstance(cap, timedelta) or not base <= cap <= MAX_RETRY_DELAY:
        raise ValueError("cap must be a timedelta between base and 2**32 seconds")
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise ValueError("jitter must be a fraction between 0 and 1")
    return _ExponentialWithJitter(base.total_seconds(), cap.total_seconds(), float(jitter))


def constant_backoff(delay: timedelta) -> Backoff:
    """Return a backoff that waits `delay` before every retry.

    >>> class Poll(Task, backoff=constant_backoff(timedelta(seconds=30))): ...
    """
    if not isinstance(delay, timedelta) or not timedelta(0) <= delay <= MAX_RETRY_DELAY:
        raise ValueError("delay must be a timedelta between 0 and 2**32 seconds")
    return _Constant(delay)


@dataclass(frozen=True, slots=True)
class _ExponentialWithJitter:
    base_seconds: float
    cap_seconds: float
    jitter: float

    def __call__(self, error_count: int) -> timedelta:
        # The exponent is bounded, so that a huge error count cannot overflow the float.
        exponent = min(max(error_count, 0), _MAX_EXPONENT)
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0**exponent)
        return timedelta(seconds=ceiling * (1 - self.jitter * random.random()))


@dataclass(frozen=True, slots=True)
class _Constant:
    delay: timedelta

    def __call__(self, error_count: int) -> timedelta:
        return self.delay


def is_exhausted(error_count: int, max_retries: int) -> bool:
    """Tell whether a job that just failed with `error_count` earlier failures gives up now.

    A job runs once and is retried `max_retries` times; the failure of its last retry
    (``error_count == max_retries``) moves it to the dead-letter table.
    """
    return error_count >= max_retries
