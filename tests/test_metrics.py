"""Prometheus metrics: job counters and histograms from hooks, queue gauges from the database,
served by an ASGI app and by a worker's metrics port."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import ConfigurationError, JobContext, Settings, Task, Worker, enqueue
from sqla_jobs.metrics import JobMetrics, MetricsServer, QueueCollector, asgi_app, count_enqueued
from sqla_jobs.worker_options import WorkerOptions
from tests.helpers import TestDatabase
from tests.processes import WorkerProcess


class Fine(Task, name="tests.metrics.fine"):
    async def run(self, ctx: JobContext) -> None:
        return None


class Broken(Task, name="tests.metrics.broken", max_retries=0):
    async def run(self, ctx: JobContext) -> None:
        raise RuntimeError("broken")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


async def add(engine: AsyncEngine, *jobs: Any) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(jobs)
        await session.commit()


async def test_job_metrics_count_outcomes_run_times_and_waits(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    await add(engine, enqueue(Fine()), enqueue(Fine()), enqueue(Broken(), queue="mail"))
    worker = Worker(
        database.url,
        tasks=[Fine, Broken],
        queues=["default", "mail"],
        hooks=[metrics],
        handle_signals=False,
    )
    await worker.run_until_idle()

    fine = {"queue": "default", "task": "tests.metrics.fine"}
    broken = {"queue": "mail", "task": "tests.metrics.broken"}
    assert value(registry, "sqla_jobs_jobs_finished_total", **fine, outcome="success") == 2
    assert value(registry, "sqla_jobs_jobs_finished_total", **broken, outcome="dead") == 1
    assert value(registry, "sqla_jobs_jobs_finished_total", **broken, outcome="success") == 0
    assert value(registry, "sqla_jobs_job_duration_seconds_count", **fine) == 2
    assert value(registry, "sqla_jobs_job_duration_seconds_count", **broken) == 1
    assert value(registry, "sqla_jobs_job_wait_seconds_count", **fine) == 2
    assert value(registry, "sqla_jobs_job_wait_seconds_sum", **fine) >= 0


async def test_queue_gauges_count_due_waiting_jobs_with_a_short_cache(
    engine: AsyncEngine,
) -> None:
    await add(
        engine,
        enqueue(Fine(), queue="mail"),
        enqueue(Fine(), queue="mail"),
        enqueue(Fine(), queue="mail", delay=timedelta(hours=1)),  # not due: not counted
        enqueue(Broken()),
    )
    registry = CollectorRegistry()
    collector = QueueCollector(engine, cache_for=timedelta(hours=1))
    registry.register(collector)
    await collector.refresh()
    mail = {"queue": "mail", "task": "tests.metrics.fine"}
    assert value(registry, "sqla_jobs_queue_depth", **mail) == 2
    assert (
        value(registry, "sqla_jobs_queue_depth", queue="default", task="tests.metrics.broken") == 1
    )
    assert value(registry, "sqla_jobs_oldest_due_age_seconds", **mail) >= 0

    await add(engine, enqueue(Fine(), queue="mail"))
    await collector.refresh()  # cached: no new reading
    assert value(registry, "sqla_jobs_queue_depth", **mail) == 2
    fresh = QueueCollector(engine, cache_for=timedelta(0))
    await fresh.refresh()
    depths = {
        sample.labels["queue"]: sample.value
        for family in fresh.collect()
        if family.name == "sqla_jobs_queue_depth"
        for sample in family.samples
    }
    assert depths == {"mail": 3, "default": 1}


async def call_asgi(app: Any, method: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/"}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m["body"] for m in sent[1:])


async def test_the_asgi_app_serves_job_metrics_and_queue_gauges(engine: AsyncEngine) -> None:
    registry = CollectorRegistry()
    JobMetrics(registry).finished.labels("mail", "t", "success").inc()
    await add(engine, enqueue(Fine(), queue="mail"))
    app = asgi_app(engine, registry=registry)

    status, headers, body = await call_asgi(app, "GET")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    text = body.decode()
    assert 'sqla_jobs_jobs_finished_total{outcome="success",queue="mail",task="t"} 1.0' in text
    assert 'sqla_jobs_queue_depth{queue="mail",task="tests.metrics.fine"} 1.0' in text
    assert (await call_asgi(app, "POST"))[0] == 405


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response


async def test_the_metrics_server_answers_scrapes_and_says_when_its_port_is_taken(
    engine: AsyncEngine,
) -> None:
    registry = CollectorRegistry()
    JobMetrics(registry)
    server = await MetricsServer.start(engine, port=0, host="127.0.0.1", registry=registry)
    try:
        response = await http_get(server.port, "/metrics")
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"sqla_jobs_queue_depth" in response
        assert b"# TYPE sqla_jobs_job_duration_seconds histogram" in response
        assert (await http_get(server.port, "/other")).startswith(b"HTTP/1.1 404")
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on port {server.port}"):
            await MetricsServer.start(engine, port=server.port, host="127.0.0.1")
    finally:
        await server.close()


async def test_a_worker_serves_its_metrics_on_its_port_while_it_runs(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    port = free_port()
    await add(engine, enqueue(Fine()))
    worker = Worker(database.url, tasks=[Fine], metrics_port=port, handle_signals=False)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            try:
                response = await http_get(port, "/metrics")
            except OSError:
                await asyncio.sleep(0.02)
                continue
            if b'sqla_jobs_jobs_finished_total{outcome="success"' in response:
                break
            await asyncio.sleep(0.02)
        assert b'queue="default",task="tests.metrics.fine"} ' in response
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    with pytest.raises(ConnectionRefusedError):
        await http_get(port, "/metrics")


async def test_a_signal_as_soon_as_the_metrics_port_answers_stops_the_worker_cleanly(
    pg_database: TestDatabase, tmp_path: Path
) -> None:
    """The port shows the worker to the world: its signal handlers are in place before it, so a
    SIGTERM sent at once is a graceful stop (exit 0), never the default kill (143)."""
    port = free_port()
    worker = WorkerProcess(pg_database.url, tmp_path / "worker.log", "--metrics-port", str(port))
    try:
        for _ in range(20_000):
            try:
                await http_get(port, "/metrics")
            except OSError:
                await asyncio.sleep(0.001)
                continue
            break
        worker.signal(signal.SIGTERM)
        assert await worker.exit_code() == 0, worker.output
    finally:
        worker.kill()


async def test_a_worker_whose_metrics_port_is_taken_does_not_start(
    database: TestDatabase,
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        worker = Worker(
            database.url, tasks=[Fine], metrics_port=taken.getsockname()[1], handle_signals=False
        )
        with pytest.raises(ConfigurationError, match="cannot serve metrics on port"):
            await worker.run_until_idle()
        await worker.engine.dispose()


async def test_enqueued_jobs_count_when_committed_not_when_rolled_back(
    engine: AsyncEngine,
) -> None:
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    stop = count_enqueued(metrics)
    try:
        await add(engine, enqueue(Fine(), queue="mail"), enqueue(Fine(), queue="mail"))
        async with AsyncSession(engine) as session:
            session.add(enqueue(Fine(), queue="mail"))
            await session.flush()
            await session.rollback()
    finally:
        stop()
    await add(engine, enqueue(Fine(), queue="mail"))  # no longer counted
    assert (
        value(registry, "sqla_jobs_jobs_enqueued_total", queue="mail", task="tests.metrics.fine")
        == 2
    )


def test_a_metrics_port_outside_the_port_range_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="metrics_port"):
        WorkerOptions.checked(metrics_port=70_000)


def test_without_prometheus_client_metrics_say_which_extra_to_install() -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if it were not installed
        from sqla_jobs import ConfigurationError, Worker
        try:
            import sqla_jobs.metrics
        except ImportError as exc:
            print(exc)
        try:
            Worker("sqlite+aiosqlite:///unused.db", queues=["q"], metrics_port=9100)
        except ConfigurationError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == [
        "sqla_jobs.metrics needs prometheus-client: pip install 'sqla_jobs[metrics]'",
        "metrics_port needs prometheus-client: pip install 'sqla_jobs[metrics]'",
    ]


def test_the_metrics_port_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLA_JOBS_METRICS_PORT", "9100")
    assert Settings().worker_options().metrics_port == 9100
