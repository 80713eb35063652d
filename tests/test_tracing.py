"""OpenTelemetry tracing: a PRODUCER span at enqueue whose context rides on the row, and a
CONSUMER span around each run, linked to it; checked with the in-memory span exporter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import JobContext, Task, Worker, enqueue
from sqla_jobs.models import Job
from sqla_jobs.tracing import TracingHooks, instrument
from tests.helpers import TestDatabase

provider = TracerProvider()
exporter = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("tests")


class Traced(Task, name="tests.tracing.traced"):
    async def run(self, ctx: JobContext) -> None:
        with tracer.start_as_current_span("inside the job"):
            pass


class TracedInThread(Task, name="tests.tracing.traced_in_thread"):
    def run(self, ctx: JobContext) -> None:
        with tracer.start_as_current_span(f"inside {threading.current_thread().name}"):
            pass


class Failing(Task, name="tests.tracing.failing", max_retries=1, backoff=lambda n: timedelta(0)):
    async def run(self, ctx: JobContext) -> None:
        raise KeyError("missing")


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    exporter.clear()
    stop = instrument(provider)
    yield
    stop()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def spans(name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def add(engine: AsyncEngine, *jobs: Job) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(jobs)
        await session.commit()


def test_enqueue_starts_a_producer_span_and_stores_its_context_on_the_job() -> None:
    with tracer.start_as_current_span("request") as request:
        job = enqueue(Traced(), queue="mail")
    [producer] = spans("create mail")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert producer.attributes == {
        "messaging.system": "sqla_jobs",
        "messaging.operation.type": "create",
        "messaging.operation.name": "create",
        "messaging.destination.name": "mail",
        "messaging.message.id": str(job.id),
        "sqla_jobs.task.name": "tests.tracing.traced",
    }
    context = producer.get_span_context()
    assert context is not None
    flags = int(context.trace_flags)
    assert job.trace_context == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


def test_no_context_is_stored_without_a_recording_tracer_or_once_stopped() -> None:
    stop = instrument(trace.NoOpTracerProvider())
    try:
        assert enqueue(Traced()).trace_context is None
    finally:
        stop()
    assert enqueue(Traced()).trace_context is None
    assert spans("create default") == []


async def test_each_run_is_a_consumer_span_linked_to_its_producer(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job, in_thread = enqueue(Traced()), enqueue(TracedInThread())
    job_id, in_thread_id = str(job.id), str(in_thread.id)
    await add(engine, job, in_thread)
    worker = Worker(
        database.url,
        tasks=[Traced, TracedInThread],
        hooks=[TracingHooks(provider)],
        handle_signals=False,
    )
    await worker.run_until_idle()

    producers = {attrs(span)["messaging.message.id"]: span for span in spans("create default")}
    consumers = {attrs(span)["messaging.message.id"]: span for span in spans("process default")}
    assert set(consumers) == set(producers) == {job_id, in_thread_id}
    for message_id, consumer in consumers.items():
        assert consumer.kind is SpanKind.CONSUMER
        assert consumer.parent is None  # a trace of its own, linked to the producer's
        [link] = consumer.links
        assert link.context.span_id == span_id(producers[message_id])
        assert link.context.trace_id == producers[message_id].context.trace_id
        assert consumer.status.status_code is StatusCode.UNSET
        assert consumer.attributes is not None
        assert attrs(consumer)["messaging.system"] == "sqla_jobs"
        assert attrs(consumer)["messaging.destination.name"] == "default"
        assert attrs(consumer)["sqla_jobs.job.attempt"] == 1
        assert attrs(consumer)["sqla_jobs.job.outcome"] == "success"
    assert attrs(consumers[job_id])["sqla_jobs.task.name"] == Traced.__task_options__.name
    # The job's own spans are children of its consumer span, in a thread too.
    [inside] = spans("inside the job")
    assert inside.parent is not None
    assert inside.parent.span_id == span_id(consumers[job_id])
    [inside_thread] = [s for s in exporter.get_finished_spans() if s.name.startswith("inside sq")]
    assert inside_thread.parent is not None
    assert inside_thread.parent.span_id == span_id(consumers[in_thread_id])


async def test_a_failed_attempt_has_an_error_status_and_its_exception(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    await add(engine, enqueue(Failing()))
    worker = Worker(
        database.url, tasks=[Failing], hooks=[TracingHooks(provider)], handle_signals=False
    )
    await worker.run_until_idle()  # attempt 1 retried, attempt 2 dead

    runs = sorted(spans("process default"), key=lambda s: attrs(s)["sqla_jobs.job.attempt"])
    outcomes = [
        (attrs(s)["sqla_jobs.job.attempt"], attrs(s)["sqla_jobs.job.outcome"]) for s in runs
    ]
    assert outcomes == [(1, "retry"), (2, "dead")]
    for run in runs:
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "KeyError: 'missing'"
        assert run.attributes is not None
        assert attrs(run)["error.type"] == "KeyError"
        [event] = run.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert dict(event.attributes)["exception.type"] == "KeyError"
        [link] = run.links  # both attempts link to the one producer
        assert link.context.span_id == span_id(spans("create default")[0])


def test_without_opentelemetry_enqueue_works_and_tracing_says_which_extra() -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        from sqla_jobs import ConfigurationError, JobContext, Task, enqueue
        from sqla_jobs.hooks import load_hooks

        class Noop(Task, name="noop"):
            async def run(self, ctx: JobContext) -> None: ...

        print(enqueue(Noop()).trace_context)
        try:
            import sqla_jobs.tracing
        except ImportError as exc:
            print(exc)
        try:
            load_hooks(["sqla_jobs.tracing:TracingHooks"])
        except ConfigurationError as exc:
            print(exc)
        print(any(name.startswith("opentelemetry") and sys.modules[name] for name in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == [
        "None",
        "sqla_jobs.tracing needs opentelemetry-api: pip install 'sqla_jobs[otel]'",
        "cannot load hook 'sqla_jobs.tracing:TracingHooks': sqla_jobs.tracing needs "
        "opentelemetry-api: pip install 'sqla_jobs[otel]'",
        "False",
    ]


def test_sqla_jobs_imports_neither_opentelemetry_nor_prometheus_unless_asked() -> None:
    program = (
        "import sys, sqla_jobs, sqla_jobs.worker, sqla_jobs.hooks, sqla_jobs.throughput\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'opentelemetry', "
        "'prometheus_client'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
