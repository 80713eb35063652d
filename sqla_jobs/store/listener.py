"""Wake an idle worker when jobs are committed: PostgreSQL LISTEN on a dedicated connection.

NOTIFY is sent by the insert trigger at commit, one per queue per statement, with the queue name
as payload. A dropped connection is reconnected with capped backoff; meanwhile the worker still
polls, so a lost notification only delays a job, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Collection
from typing import Any

import asyncpg
from loguru import logger
from sqlalchemy.engine import URL

from sqla_jobs.dialects.postgresql import CANCEL_CHANNEL, CHANNEL
from sqla_jobs.store.retrying import backoff_delay, sleep_unless
from sqla_jobs.urls import display_url

CONNECT_TIMEOUT = 5.0


class Listener:
    """Call `wake` when a job is committed into one of `queues`, `cancel` when one is cancelled."""

    def __init__(
        self,
        url: URL,
        queues: Collection[str],
        wake: Callable[[], None],
        cancel: Callable[[uuid.UUID, str], None],
    ) -> None:
        # asyncpg takes a libpq-style DSN; the password stays in it, and out of every log line.
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._display = display_url(url)
        self._queues = frozenset(queues)
        self._wake = wake
        self._cancel = cancel
        self.connected = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until `stopping` is set, reconnecting whenever the connection drops."""
        failures = 0
        while not stopping.is_set():
            try:
                connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                failures += 1
                await self._back_off(exc, failures, stopping)
                continue
            failures = 0
            try:
                await self._listen(connection, stopping)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("listener connection failed", error=str(exc))
            finally:
                self.connected.clear()
                if not connection.is_closed():
                    await connection.close(timeout=1)

    async def _listen(self, connection: asyncpg.Connection, stopping: asyncio.Event) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(CHANNEL, self._on_notification)
        await connection.add_listener(CANCEL_CHANNEL, self._on_cancellation)
        self.connected.set()
        logger.debug("listening for new jobs", database=self._display, channel=CHANNEL)
        # Jobs committed while we were not listening sent their notifications to nobody.
        self._wake()
        stop = asyncio.ensure_future(stopping.wait())
        drop = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait([stop, drop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            drop.cancel()
        if lost.is_set():
            logger.warning("listener connection lost; reconnecting")

    def _on_notification(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if payload in self._queues:
            self._wake()

    def _on_cancellation(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        job_id, _, reason = payload.partition(":")
        with contextlib.suppress(ValueError):  # not ours to understand: ignore it
            self._cancel(uuid.UUID(job_id), reason)

    async def _back_off(self, exc: BaseException, failures: int, stopping: asyncio.Event) -> None:
        delay = backoff_delay(failures)
        logger.warning(
            "listener cannot connect",
            error=str(exc),
            failures=failures,
            retry_in=delay.total_seconds(),
        )
        await sleep_unless(stopping, delay)
