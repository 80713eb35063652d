"""Where plain ``def run`` jobs run: a thread pool, and the sync engine their transactions use."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from sqla_jobs.store import create_job_sync_engine


class JobThreads:
    """A pool of `concurrency` threads, and a sync engine made the first time a job needs one."""

    def __init__(self, url: URL, concurrency: int) -> None:
        self._url = url
        self._concurrency = concurrency
        self._executor: ThreadPoolExecutor | None = None
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    def open(self) -> None:
        """Make the thread pool."""
        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="sqla_jobs")

    def submit(self, function: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `function` in a thread of the pool."""
        assert self._executor is not None, "open() the runner first"
        # copy_context carries loguru's contextualize() values into the thread.
        return self._executor.submit(contextvars.copy_context().run, function)

    def sync_engine(self) -> Engine:
        """Return the sync engine of the jobs' transactions (called from job threads at once)."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = create_job_sync_engine(self._url, concurrency=self._concurrency)
            return self._engine

    async def close(self) -> None:
        """Let go of the pool and the engine (threads still running are left be)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)
