"""Complete a job in the transaction of its own writes: `ctx.transaction()`.

Delivery is at least once: a job whose worker died runs again. Writes made through
`ctx.transaction()` are kept exactly once, because the same transaction deletes the job's row,
guarded by ``locked_by = <this worker>``: if another worker took the job over (its lock timed
out, or this worker was taken for dead), the delete finds no row, the transaction is rolled
back and `LockLostError` is raised, so only the attempt that completes the job keeps its writes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

from sqlalchemy import Delete, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from .errors import LockLostError, TransactionUsageError


class TransactionBinding:
    """The worker's side of `ctx.transaction()` for one job, and whether it has committed.

    `delete` builds the guarded delete of the job's row; `sync_engine` returns the engine a
    sync ``def run`` uses; `loop` is the worker's event loop, the only one `engine` works on.
    """

    def __init__(
        self,
        *,
        delete: Callable[[], Delete],
        engine: AsyncEngine,
        sync_engine: Callable[[], Engine],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.delete = delete
        self.engine = engine
        self.sync_engine = sync_engine
        self.loop = loop
        self.is_committed = False
        """Whether a transaction committed: the job's row is deleted, the job is complete."""
        self._is_open = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Mark a transaction open; raise if one is open or one has already completed the job."""
        with self._lock:
            if self.is_committed:
                raise TransactionUsageError(
                    "ctx.transaction() already completed this job; its row is deleted, so "
                    "nothing more can be committed with it (do all the job's writes in one block)"
                )
            if self._is_open:
                raise TransactionUsageError("ctx.transaction() blocks cannot be nested")
            self._is_open = True

    def close(self, *, committed: bool) -> None:
        """Mark the open transaction ended; a rolled-back one may be followed by another."""
        with self._lock:
            self._is_open = False
            self.is_committed = committed


class JobTransaction:
    """A transaction that completes the running job when it commits.

    ``async with`` in an ``async def run`` yields an `AsyncSession`; ``with`` in a plain
    ``def run`` (run in a thread) yields a `Session`. On a normal exit the job's row is deleted
    in the same transaction, then it commits; if the worker no longer holds the job, it rolls
    back and raises `LockLostError`. An exception inside the block rolls back and propagates.
    """

    def __init__(self, binding: TransactionBinding) -> None:
        self._binding = binding
        self._session: Session | None = None
        self._async_session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        binding = self._binding
        if _running_loop() is not binding.loop:
            raise TransactionUsageError(
                "`async with ctx.transaction()` works only in the job's own `async def run`; "
                "a plain `def run` uses `with ctx.transaction()`"
            )
        binding.open()
        # Not expired at commit: the session closes with the block, and reading an expired
        # attribute afterwards would need I/O an AsyncSession cannot do implicitly.
        self._async_session = AsyncSession(binding.engine, expire_on_commit=False)
        return self._async_session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._async_session
        assert session is not None, "__aexit__ without __aenter__"
        self._async_session = None
        committed = False
        try:
            if exc_type is not None:
                await session.rollback()
                return
            await session.flush()  # the job's own errors surface before the completion
            connection = await session.connection()
            deleted = (await connection.execute(self._binding.delete())).rowcount
            if deleted != 1:
                await session.rollback()
                raise LockLostError()
            await session.commit()
            committed = True
        finally:
            self._binding.close(committed=committed)
            await session.close()

    def __enter__(self) -> Session:
        if _running_loop() is not None:
            raise TransactionUsageError(
                "`with ctx.transaction()` would block the event loop: in an `async def run` "
                "use `async with ctx.transaction()`"
            )
        binding = self._binding
        binding.open()
        try:
            engine = binding.sync_engine()
        except BaseException:
            binding.close(committed=False)
            raise
        self._session = Session(engine, expire_on_commit=False)
        return self._session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session = self._session
        assert session is not None, "__exit__ without __enter__"
        self._session = None
        committed = False
        try:
            if exc_type is not None:
                session.rollback()
                return
            session.flush()
            deleted = session.connection().execute(self._binding.delete()).rowcount
            if deleted != 1:
                session.rollback()
                raise LockLostError()
            session.commit()
            committed = True
        finally:
            self._binding.close(committed=committed)
            session.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
