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


def test_admin_all_is_pinned() -> None:
    # The dashboard and the CLI call these: a rename must be deliberate.
    from sqla_jobs import admin

    assert sorted(admin.__all__) == sorted(
        [
            "DEFAULT_CANCEL_REASON",
            "DEFAULT_HEARTBEAT_TIMEOUT",
            "DEFAULT_PAGE_SIZE",
            "DEFAULT_REDRIVE_BATCH_SIZE",
            "MAX_PAGE_SIZE",
            "BatchCallback",
            "CheckResult",
            "HealthReport",
            "JobDetail",
            "JobState",
            "JobSummary",
            "QueueStats",
            "Redrive",
            "WorkerInfo",
            "cancel",
            "cancel_jobs",
            "cancel_many",
            "check",
            "count_dead_letters",
            "count_jobs",
            "database_now",
            "dead_letter_conditions",
            "delete_dead_letters",
            "enqueue_by_name",
            "get_job",
            "list_dead_letters",
            "list_jobs",
            "purge",
            "queue_stats",
            "redrive",
            "remove_queue_limit",
            "retry_dead_letters",
            "set_queue_limit",
            "workers",
        ]
    )
    for name in admin.__all__:
        assert hasattr(admin, name), name
