"""The public API is what DESIGN.md names, and nothing slips in unnoticed."""

from __future__ import annotations

import sqla_jobs


def test_all_is_pinned() -> None:
    assert sorted(sqla_jobs.__all__) == [
        "ConfigurationError",
        "DeadLetterJob",
        "Discard",
        "DuplicateTaskNameError",
        "EnqueueError",
        "Job",
        "JobContext",
        "PayloadError",
        "Periodic",
        "Retry",
        "Settings",
        "Snooze",
        "SqlaJobsError",
        "Task",
        "UnknownTaskError",
        "Worker",
        "constant_backoff",
        "enqueue",
        "enqueue_bulk",
        "enqueue_many",
        "enqueue_unique",
        "exponential_backoff",
        "exponential_backoff_with_jitter",
        "periodic",
    ]


def test_every_exported_name_exists_and_is_public() -> None:
    for name in sqla_jobs.__all__:
        member = getattr(sqla_jobs, name)
        assert member.__module__.startswith("sqla_jobs."), name
