"""Operate the queue: the one place for admin operations, used by the CLI and the dashboard.

Statements (no I/O; run them on your own session, in your own transaction)::

    cancel(job_id, *, reason=DEFAULT_CANCEL_REASON) -> Update
    cancel_many(job_ids, *, reason=DEFAULT_CANCEL_REASON) -> Update
    set_queue_limit(queue, max_running) -> UpsertQueueLimit
    remove_queue_limit(queue) -> Delete
    redrive(ids=None, *, queue, name, failed_before, failed_after, older_than, batch_size)
        -> Redrive(insert, delete)
    purge(ids=None, *, queue, name, failed_before, failed_after, older_than, batch_size)
        -> Delete

Reads (an `AsyncSession` on PostgreSQL or SQLite; states and ages by the database's clock)::

    list_jobs(session, *, queue=None, name=None, state=None, older_than=None,
              limit=50, offset=0) -> list[JobSummary]          # state=DEAD: dead letters
    count_jobs(session, *, queue=None, name=None, state=None, older_than=None) -> int
    list_dead_letters(session, *, queue=None, name=None, failed_before=None,
                      failed_after=None, older_than=None, limit=50, offset=0)
        -> list[JobSummary]
    count_dead_letters(session, *, queue=None, name=None, failed_before=None,
                       failed_after=None, older_than=None) -> int
    get_job(session, job_id) -> JobDetail | None               # job, or dead letter by either id
    queue_stats(session) -> list[QueueStats]
    workers(session, *, heartbeat_timeout=30 s) -> list[WorkerInfo]
    check(session, *, heartbeat_timeout=30 s) -> HealthReport   # .ok, .results

Writes::

    retry_dead_letters(session, ids=None, *, queue=None, name=None, failed_before=None,
                       failed_after=None, older_than=None, batch_size=1000, limit=None,
                       on_batch=None) -> int                   # commits each batch
    delete_dead_letters(...same...) -> int                     # commits each batch
    cancel_jobs(session, ids, reason=DEFAULT_CANCEL_REASON) -> int   # you commit
    enqueue_by_name(session, name, payload, *, queue=None, priority=None, run_at=None,
                    delay=None, context="") -> Job             # you commit

`JobState` is ``due``, ``scheduled``, ``retrying``, ``running``, ``cancelled`` (cancelled while
waiting, about to become a dead letter) and ``dead``. Bad arguments raise `ValueError` (or
`EnqueueError`, `PayloadError`, `UnknownTaskError` for `enqueue_by_name`) with one sentence.

    async with AsyncSession(engine) as session:
        for stats in await queue_stats(session):
            print(stats.queue, stats.due, stats.dead)
        await retry_dead_letters(session, queue="mail")
"""

from __future__ import annotations

from .health import check as check
from .listing import DEFAULT_PAGE_SIZE as DEFAULT_PAGE_SIZE
from .listing import MAX_PAGE_SIZE as MAX_PAGE_SIZE
from .listing import count_dead_letters as count_dead_letters
from .listing import count_jobs as count_jobs
from .listing import get_job as get_job
from .listing import list_dead_letters as list_dead_letters
from .listing import list_jobs as list_jobs
from .operations import BatchCallback as BatchCallback
from .operations import cancel_jobs as cancel_jobs
from .operations import delete_dead_letters as delete_dead_letters
from .operations import enqueue_by_name as enqueue_by_name
from .operations import retry_dead_letters as retry_dead_letters
from .overview import DEFAULT_HEARTBEAT_TIMEOUT as DEFAULT_HEARTBEAT_TIMEOUT
from .overview import database_now as database_now
from .overview import queue_stats as queue_stats
from .overview import workers as workers
from .records import CheckResult as CheckResult
from .records import HealthReport as HealthReport
from .records import JobDetail as JobDetail
from .records import JobSummary as JobSummary
from .records import QueueStats as QueueStats
from .records import WorkerInfo as WorkerInfo
from .statements import DEFAULT_CANCEL_REASON as DEFAULT_CANCEL_REASON
from .statements import DEFAULT_REDRIVE_BATCH_SIZE as DEFAULT_REDRIVE_BATCH_SIZE
from .statements import Redrive as Redrive
from .statements import cancel as cancel
from .statements import cancel_many as cancel_many
from .statements import dead_letter_conditions as dead_letter_conditions
from .statements import purge as purge
from .statements import redrive as redrive
from .statements import remove_queue_limit as remove_queue_limit
from .statements import set_queue_limit as set_queue_limit
from .states import JobState as JobState

__all__ = [
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
