"""Prometheus metrics of sqla_jobs (the optional extra ``sqla_jobs[metrics]``).

- `JobMetrics`: counters and histograms fed by a worker's lifecycle hooks and by the
  enqueues this process commits; `default_metrics()` is the process's one instance, in
  prometheus-client's default registry.
- `QueueCollector`: gauges read from the database when scraped (with a short cache).
- `asgi_app(engine)`: an ASGI app serving both (the dashboard mounts it at ``/metrics``);
  `MetricsServer`: the same on a worker's ``--metrics-port``.

Labels are the queue and the task name only (and the outcome of finished jobs), so their number
stays that of the tasks an application defines.

>>> worker = Worker(url, metrics_port=9100)             # or: sqla-jobs worker --metrics-port 9100
>>> app.mount("/metrics", sqla_jobs.metrics.asgi_app(engine))
"""

from __future__ import annotations

try:
    import prometheus_client as _prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "sqla_jobs.metrics needs prometheus-client: pip install 'sqla_jobs[metrics]'"
    ) from exc

from sqla_jobs.metrics.enqueued import count_enqueued as count_enqueued
from sqla_jobs.metrics.exposition import MetricsServer as MetricsServer
from sqla_jobs.metrics.exposition import asgi_app as asgi_app
from sqla_jobs.metrics.exposition import exposition as exposition
from sqla_jobs.metrics.jobs import JobMetrics as JobMetrics
from sqla_jobs.metrics.jobs import default_metrics as default_metrics
from sqla_jobs.metrics.queues import QueueCollector as QueueCollector

__all__ = [
    "JobMetrics",
    "MetricsServer",
    "QueueCollector",
    "asgi_app",
    "count_enqueued",
    "default_metrics",
    "exposition",
]
