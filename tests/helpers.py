"""Helpers shared by the test modules: the `TestDatabase` the fixtures hand out, polling waits,
committing jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import Job


@dataclass(frozen=True)
class TestDatabase:
    """A migrated database of one test's own, on PostgreSQL or SQLite.

    `url` names the async driver (``postgresql+asyncpg``, ``sqlite+aiosqlite``) for
    `create_async_engine` and `Worker`; `sync_url` names the sync one (``postgresql+psycopg``,
    ``sqlite``) for `create_engine` and plain `Session`s.
    """

    # Not a test class, although its name starts with "Test".
    __test__: ClassVar[bool] = False

    dialect: Literal["postgresql", "sqlite"]
    url: str
    sync_url: str


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Await `predicate` every `interval` seconds until it is true; fail after `timeout` seconds.

    Raises AssertionError naming the predicate when the deadline passes, so a test waits for a
    condition instead of sleeping and hoping.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() >= deadline:
            name = getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"{name} was still false after {timeout} s")
        await asyncio.sleep(interval)


async def add_jobs(engine: AsyncEngine, *jobs: Job) -> list[uuid.UUID]:
    """Commit `jobs` (from `enqueue(...)`) in one transaction; return their ids."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        session.add_all(jobs)
        await session.commit()
    return [job.id for job in jobs]
