"""Serve the metrics: an ASGI app to mount (``/metrics``), and a worker's own small HTTP server.

Both serve prometheus-client's default registry (the job metrics and whatever else the
application registers there) followed by the queue gauges of one database (`QueueCollector`),
which are read, with a short cache, before each scrape. The gauges are not put in the default
registry, so a worker and a dashboard in one process never register them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.metrics.queues import QueueCollector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A scrape request is one short line and a few headers.
MAX_REQUEST_BYTES = 16_384


class _Exposed(Collector):
    """The default registry's metrics, then the queue gauges."""

    def __init__(self, registry: Collector, queues: QueueCollector) -> None:
        self._registry, self._queues = registry, queues

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._queues.collect()


async def exposition(queues: QueueCollector, registry: Collector = REGISTRY) -> bytes:
    """Return the text exposition of `registry` and of `queues`, refreshed if stale."""
    try:
        await queues.refresh()
    except Exception as exc:
        # The job metrics are still worth serving; the gauges keep their last reading.
        logger.opt(exception=exc).warning("reading the queue gauges failed")
    return generate_latest(_Exposed(registry, queues))


def asgi_app(engine: AsyncEngine, *, registry: Collector = REGISTRY) -> ASGIApp:
    """Return an ASGI app that serves the metrics, with the queue gauges of `engine`'s database.

    >>> app.mount("/metrics", asgi_app(engine))   # Starlette, FastAPI
    """
    queues = QueueCollector(engine)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"only GET\n", b"text/plain; charset=utf-8")
            return
        body = await exposition(queues, registry)
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body)

    return app


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = CONTENT_TYPE_LATEST.encode()
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsServer:
    """A worker's own HTTP server of its metrics, on its event loop: ``GET /metrics``.

    >>> server = await MetricsServer.start(engine, port=9100)
    >>> await server.close()
    """

    def __init__(self, server: asyncio.Server, queues: QueueCollector, registry: Collector):
        self._server, self._queues, self._registry = server, queues, registry

    @classmethod
    async def start(
        cls,
        engine: AsyncEngine,
        *,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104 - Prometheus scrapes from another host
        registry: Collector = REGISTRY,
    ) -> MetricsServer:
        """Listen on `host`:`port`; `ConfigurationError` if the port cannot be had."""
        queues = QueueCollector(engine)
        holder: list[MetricsServer] = []
        try:
            server = await asyncio.start_server(
                lambda r, w: holder[0]._handle(r, w), host=host, port=port
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on port {port}: {exc.strerror or exc}"
            ) from exc
        holder.append(cls(server, queues, registry))
        return holder[0]

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0: any free port)."""
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop listening and close the open connections."""
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = [*head[:MAX_REQUEST_BYTES].split(b" ", 2), b"", b""]
            if method not in (b"GET", b"HEAD"):
                status, body, kind = b"405 Method Not Allowed", b"only GET\n", b"text/plain"
            elif path.split(b"?")[0] not in (b"/", b"/metrics"):
                status, body, kind = b"404 Not Found", b"metrics are at /metrics\n", b"text/plain"
            else:
                status, kind = b"200 OK", CONTENT_TYPE_LATEST.encode()
                body = await exposition(self._queues, self._registry)
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + (b"" if method == b"HEAD" else body)
            )  # fmt: skip
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass  # a client that went away or sent no HTTP: nothing to answer
        finally:
            writer.close()
