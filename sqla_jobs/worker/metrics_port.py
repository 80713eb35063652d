"""A worker's ``metrics_port``: its job metrics as hooks, and a small HTTP server of them.

Both need the optional extra ``sqla_jobs[metrics]`` (prometheus-client); without it, a worker
given a metrics port refuses to start with one clear line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import ModuleType

from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.errors import ConfigurationError


def _metrics() -> ModuleType:
    try:
        from sqla_jobs import metrics
    except ImportError as exc:
        raise ConfigurationError(
            "metrics_port needs prometheus-client: pip install 'sqla_jobs[metrics]'"
        ) from exc
    return metrics


def with_metrics(hooks: Iterable[object], port: int | None) -> list[object]:
    """Return `hooks`, and the process's job metrics if the worker serves them on `port`."""
    return list(hooks) if port is None else [*hooks, _metrics().default_metrics()]


async def serve_metrics(
    engine: AsyncEngine, port: int | None, stopping: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Start serving the metrics on `port` (none if None) until `stopping` is set; return the
    task that serves them. `ConfigurationError` at once if the port cannot be had."""
    if port is None:
        return []
    metrics = _metrics()
    server = await metrics.MetricsServer.start(engine, port=port)
    stop_counting = metrics.count_enqueued()

    async def serve() -> None:
        try:
            await stopping.wait()
        finally:
            stop_counting()
            await server.close()

    return [asyncio.create_task(serve())]
