"""OpenTelemetry tracing of jobs (the optional extra ``sqla_jobs[otel]``), after the messaging
semantic conventions.

- `instrument()`: each `enqueue()` in this process starts and ends a PRODUCER span
  ``create {queue}`` and stores its context (a W3C ``traceparent``) on the job row
  (`Job.trace_context`).
- `TracingHooks`: lifecycle hooks that wrap each run in a CONSUMER span ``process {queue}``,
  linked to the producer's context, current while the job's code runs (its own spans and logs
  are its children), with an error status when the attempt fails.

Both use the application's tracer provider (the global one unless given): without an SDK
configured, OpenTelemetry's API records nothing and no context is stored. sqla_jobs never
imports OpenTelemetry unless this module is imported: without the extra, enqueues and workers
pay nothing for tracing.

>>> sqla_jobs.tracing.instrument()  # where jobs are enqueued
>>> Worker(url, hooks=[sqla_jobs.tracing.TracingHooks()])  # or, for the worker command:
>>> # SQLA_JOBS_HOOKS=sqla_jobs.tracing:TracingHooks
>>> # SQLA_JOBS_HOOKS=sqla_jobs.tracing:TracingHooks
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "sqla_jobs.tracing needs opentelemetry-api: pip install 'sqla_jobs[otel]'"
    ) from exc

from sqla_jobs.enqueue import observe_enqueue
from sqla_jobs.hooks import JobEnd, JobStart
from sqla_jobs.models import Job

SYSTEM = "sqla_jobs"
TRACEPARENT = "traceparent"
FAILED = frozenset({"retry", "dead", "rescued"})
"""Outcomes whose span gets an error status (a cancelled or snoozed job did not fail)."""
_propagator = TraceContextTextMapPropagator()


def _tracer(provider: TracerProvider | None) -> trace.Tracer:
    return trace.get_tracer("sqla_jobs", version("sqla_jobs"), tracer_provider=provider)


def instrument(tracer_provider: TracerProvider | None = None) -> Callable[[], None]:
    """Trace every `enqueue()` of this process; return a function that stops it.

    The PRODUCER span is a child of the span current at the call (the request that enqueued
    the job); its context is stored on the job, so the worker's CONSUMER span links to it.
    `enqueue_many`, `enqueue_bulk` and `enqueue_unique` store no context.
    """
    tracer = _tracer(tracer_provider)

    def produce(job: Job) -> None:
        queue = job.queue
        with tracer.start_as_current_span(
            f"create {queue}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "create",
                "messaging.operation.name": "create",
                "messaging.destination.name": queue,
                "messaging.message.id": str(job.id),
                "sqla_jobs.task.name": job.name,
            },
        ) as span:
            if span.get_span_context().is_valid:
                carrier: dict[str, str] = {}
                _propagator.inject(carrier)
                job.trace_context = carrier.get(TRACEPARENT)

    observe_enqueue(produce)
    return lambda: observe_enqueue(None)


class TracingHooks:
    """Lifecycle hooks that run each job in a CONSUMER span ``process {queue}``.

    >>> Worker(url, hooks=[TracingHooks()])
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = _tracer(tracer_provider)
        self._spans: dict[str, tuple[trace.Span, Any]] = {}

    def on_job_start(self, job: JobStart) -> None:
        """Start the job's span, linked to its producer's, and make it current."""
        links = []
        if job.trace_context:
            produced = _propagator.extract({TRACEPARENT: job.trace_context})
            producer = trace.get_current_span(produced).get_span_context()
            if producer.is_valid:
                links.append(Link(producer))
        span = self._tracer.start_span(
            f"process {job.queue}",
            # A new trace, linked to the producer's: a job may run long after, many times.
            context=otel_context.Context(),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.id,
                "messaging.consumer.group.name": job.queue,
                "sqla_jobs.task.name": job.name,
                "sqla_jobs.job.attempt": job.attempt,
                "sqla_jobs.worker.id": job.worker_id,
            },
        )
        # Attached in the job's own task: its code (and a sync job's thread) runs inside it.
        self._spans[job.id] = (span, otel_context.attach(trace.set_span_in_context(span)))

    def on_job_end(self, end: JobEnd) -> None:
        """End the job's span, with an error status if the attempt failed."""
        entry = self._spans.pop(end.job.id, None)
        if entry is None:
            return  # a rescued job: it did not run here
        span, token = entry
        span.set_attribute("sqla_jobs.job.outcome", end.outcome)
        if end.exception is not None:
            span.record_exception(end.exception)
        if end.outcome in FAILED:
            span.set_status(Status(StatusCode.ERROR, _first_line(end.error)))
            span.set_attribute("error.type", _error_type(end))
        span.end()
        otel_context.detach(token)


def _first_line(error: str | None) -> str | None:
    return None if not error else error.strip().splitlines()[-1][:200]


def _error_type(end: JobEnd) -> str:
    if end.exception is not None:
        return type(end.exception).__qualname__
    return "sqla_jobs.worker_lost" if end.outcome == "rescued" else "_OTHER"
