"""The lease's own connection: register, renew and unregister a worker, never from the jobs' pool.

A worker's lease is its registration row in ``sqla_jobs_worker``, renewed by each heartbeat. The
connection is opened at start and kept, so a worker whose jobs have used up every connection the
database allows (or the application's role may open) can still renew its lease. If it drops, it
is reopened at the next beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from sqla_jobs.dialects import JobStatements, statements_for
from sqla_jobs.engine import create_engine

CONNECT_TIMEOUT = timedelta(seconds=5)


class LeaseConnection:
    """One long-lived connection to `url` for the lease statements of one worker process.

    Each call runs within `timeout`; a call that fails closes the connection, and the next call
    opens a new one. Errors propagate: the caller decides when to retry.
    """

    def __init__(self, url: URL, *, timeout: timedelta) -> None:
        self._url = url
        self._timeout = timeout.total_seconds()
        self._engine: AsyncEngine | None = None
        self._connection: AsyncConnection | None = None
        self._statements: JobStatements | None = None

    async def renew(self, worker_id: str) -> bool:
        """Renew `worker_id`'s lease; False if its registration is gone (it was declared dead)."""
        statements, connection = await self._connect()
        async with self._bounded():
            result = await connection.execute(statements.heartbeat(worker_id=worker_id))
        return result.rowcount == 1

    async def register(self, worker_id: str, queues: Sequence[str]) -> None:
        """Register `worker_id`: its lease starts now."""
        statements, connection = await self._connect()
        register = statements.register_worker(
            worker_id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), queues=queues
        )
        async with self._bounded():
            # A registration left by an earlier attempt whose reply was lost is ours already.
            with contextlib.suppress(IntegrityError):
                await connection.execute(register)

    async def unregister(self, worker_id: str) -> None:
        """Remove `worker_id`'s registration (call only once it holds no job)."""
        statements, connection = await self._connect()
        async with self._bounded():
            await connection.execute(statements.unregister_worker(worker_id=worker_id))

    async def close(self) -> None:
        """Close the connection and its engine."""
        await self._drop()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _connect(self) -> tuple[JobStatements, AsyncConnection]:
        if self._engine is None:
            # NullPool: the one connection is held here, nothing is pooled behind it.
            self._engine = create_engine(self._url, poolclass=NullPool)
            self._statements = statements_for(self._engine.dialect.name)
        assert self._statements is not None
        if self._connection is None or self._connection.closed:
            engine = self._engine.execution_options(isolation_level="AUTOCOMMIT")
            async with asyncio.timeout(CONNECT_TIMEOUT.total_seconds()):
                self._connection = await engine.connect()
        return self._statements, self._connection

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()
