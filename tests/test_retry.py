"""Backoff policies: the default, exponential with jitter, constant; each a pure function."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sqla_jobs import (
    JobContext,
    Task,
    constant_backoff,
    exponential_backoff,
    exponential_backoff_with_jitter,
)
from sqla_jobs.options import check_backoff
from sqla_jobs.retry import MAX_RETRY_DELAY

SAMPLES = 2000


def test_the_default_doubles_from_two_seconds() -> None:
    assert [exponential_backoff(n).total_seconds() for n in range(4)] == [2, 4, 8, 16]
    assert exponential_backoff(10_000) == MAX_RETRY_DELAY


def test_jittered_delays_lie_between_the_shortened_and_the_full_delay() -> None:
    backoff = exponential_backoff_with_jitter(
        base=timedelta(seconds=1), cap=timedelta(hours=1), jitter=0.5
    )
    for error_count, full in [(0, 1.0), (3, 8.0), (10, 1024.0)]:
        delays = [backoff(error_count).total_seconds() for _ in range(SAMPLES)]
        assert all(full * 0.5 <= delay <= full for delay in delays)
        # Spread out, not one value: the lowest and highest samples are far apart.
        assert max(delays) - min(delays) > full * 0.4


def test_jittered_delays_never_exceed_the_cap() -> None:
    backoff = exponential_backoff_with_jitter(
        base=timedelta(seconds=1), cap=timedelta(minutes=10), jitter=0.1
    )
    for error_count in (10, 20, 63, 10**9):
        delays = [backoff(error_count) for _ in range(200)]
        assert all(timedelta(minutes=9) <= delay <= timedelta(minutes=10) for delay in delays)


def test_no_jitter_is_exact_and_full_jitter_reaches_down_to_zero() -> None:
    exact = exponential_backoff_with_jitter(base=timedelta(seconds=3), jitter=0)
    assert [exact(n) for n in range(3)] == [timedelta(seconds=s) for s in (3, 6, 12)]
    full = exponential_backoff_with_jitter(base=timedelta(seconds=8), jitter=1)
    delays = [full(0).total_seconds() for _ in range(SAMPLES)]
    assert all(0 <= delay <= 8 for delay in delays)
    assert min(delays) < 1


def test_a_negative_error_count_is_the_first_delay() -> None:
    backoff = exponential_backoff_with_jitter(base=timedelta(seconds=5), jitter=0)
    assert backoff(-3) == timedelta(seconds=5)


def test_constant_backoff_waits_the_same_every_time() -> None:
    backoff = constant_backoff(timedelta(seconds=30))
    assert {backoff(n) for n in (0, 1, 50, 10**9)} == {timedelta(seconds=30)}


def test_the_policies_pass_the_task_options_check() -> None:
    for backoff in (
        exponential_backoff_with_jitter(),
        constant_backoff(timedelta(0)),
        constant_backoff(MAX_RETRY_DELAY),
    ):
        assert check_backoff(backoff) is backoff

    class Polls(Task, name="tests.retry.polls", backoff=constant_backoff(timedelta(seconds=7))):
        async def run(self, ctx: JobContext) -> None:
            return None

    assert Polls.__task_options__.backoff(4) == timedelta(seconds=7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base": timedelta(0)}, "base must be a positive timedelta"),
        ({"base": 2}, "base must be a positive timedelta"),
        ({"cap": timedelta(seconds=1)}, "cap must be a timedelta between base"),
        ({"cap": MAX_RETRY_DELAY * 2}, "cap must be a timedelta between base"),
        ({"jitter": -0.1}, "jitter must be a fraction"),
        ({"jitter": 1.5}, "jitter must be a fraction"),
        ({"jitter": True}, "jitter must be a fraction"),
    ],
)
def test_bad_jitter_options_raise_at_once(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        exponential_backoff_with_jitter(**options)


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), MAX_RETRY_DELAY * 2, 30])
def test_a_bad_constant_delay_raises_at_once(delay: Any) -> None:
    with pytest.raises(ValueError, match="delay must be a timedelta"):
        constant_backoff(delay)
