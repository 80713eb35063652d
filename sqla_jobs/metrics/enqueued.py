"""Count the jobs this process enqueues, when their transaction commits.

A job is a row that the application's own session inserts; only the process that commits it
can count it honestly (a rolled-back enqueue is no job). So `sqla_jobs_jobs_enqueued_total` is
per process: each application process (and each worker, for the jobs its jobs enqueue) that
calls `count_enqueued` exposes its own share, and Prometheus adds them up. Counted: the jobs of
`enqueue()` added to a `Session` or `AsyncSession`. Not counted: the statements of
`enqueue_many`, `enqueue_bulk` and `enqueue_unique`, and periodic jobs (the queue depth gauge
sees those once they are due).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from sqla_jobs.metrics.jobs import JobMetrics, default_metrics
from sqla_jobs.models import Job

_PENDING = "sqla_jobs.metrics.enqueued"
_lock = threading.Lock()
_counting: list[JobMetrics] = []


def count_enqueued(metrics: JobMetrics | None = None) -> Callable[[], None]:
    """Count in `metrics` (default: `default_metrics()`) the jobs every session of this process
    enqueues, once committed; return a function that stops counting.

    >>> stop = count_enqueued()
    """
    target = default_metrics() if metrics is None else metrics
    with _lock:
        if not _counting:
            event.listen(Session, "after_flush", _after_flush)
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _after_rollback)
        _counting.append(target)

    def stop() -> None:
        with _lock:
            if target not in _counting:
                return
            _counting.remove(target)
            if not _counting:
                event.remove(Session, "after_flush", _after_flush)
                event.remove(Session, "after_commit", _after_commit)
                event.remove(Session, "after_rollback", _after_rollback)

    return stop


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    jobs = [obj for obj in session.new if isinstance(obj, Job)]
    if jobs:
        pending: Counter[tuple[str, str]] = session.info.setdefault(_PENDING, Counter())
        pending.update((job.queue, job.name) for job in jobs)


def _after_commit(session: Session) -> None:
    pending: Counter[tuple[str, str]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    with _lock:
        targets = list(_counting)
    for metrics in targets:
        for (queue, name), count in pending.items():
            metrics.enqueued.labels(queue, name).inc(count)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
