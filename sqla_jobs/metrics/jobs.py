"""Counters and histograms of jobs: enqueued, finished by outcome, run time, time waited."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from sqla_jobs.hooks import JobEnd, JobStart

LABELS = ("queue", "task")
# From a millisecond job to a day-long one: the default buckets stop at 10 s.
DURATION_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0),
)


class JobMetrics:
    """The job metrics, registered in `registry`; as lifecycle hooks, they count each job.

    Give it to a worker as a hook (``Worker(url, hooks=[default_metrics()])``; a worker with
    `metrics_port` does so itself), and to `count_enqueued` for the enqueue counter.

    >>> metrics = JobMetrics(CollectorRegistry())
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.enqueued = Counter(
            "sqla_jobs_jobs_enqueued",
            "Jobs enqueued by this process (counted when their transaction commits).",
            LABELS,
            registry=registry,
        )
        self.finished = Counter(
            "sqla_jobs_jobs_finished",
            "Jobs ended on this worker, by outcome: success, retry, dead, cancelled, snoozed, "
            "rescued (a dead worker's job this worker rescued).",
            (*LABELS, "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "sqla_jobs_job_duration_seconds",
            "How long jobs ran, whatever their outcome.",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "sqla_jobs_job_wait_seconds",
            "How long jobs waited from due (run_at) to start.",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def on_job_start(self, job: JobStart) -> None:
        """Observe how long `job` waited since it was due (0 if the clocks disagree)."""
        waited = (job.started_at - job.run_at).total_seconds()
        self.wait.labels(job.queue, job.name).observe(max(waited, 0.0))

    def on_job_end(self, end: JobEnd) -> None:
        """Count the job's outcome and observe its run time (a released job counts neither:
        it runs again)."""
        if end.outcome == "released":
            return
        job = end.job
        self.finished.labels(job.queue, job.name, end.outcome).inc()
        if end.duration is not None:
            self.duration.labels(job.queue, job.name).observe(end.duration.total_seconds())


_default: JobMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> JobMetrics:
    """Return this process's `JobMetrics`, in prometheus-client's default registry (made once:
    a metric can be registered only once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = JobMetrics()
        return _default
