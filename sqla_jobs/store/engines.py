"""The engines a worker runs on, their pools sized for the connections it really uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.engine import create_engine, create_sync_engine
from sqla_jobs.errors import ConfigurationError


def create_worker_engine(url: str | URL, *, concurrency: int) -> AsyncEngine:
    """Create the engine of a worker, its pool sized for the connections it really uses."""
    return create_engine(url, **pool_options(url, concurrency))


def pool_options(url: str | URL, concurrency: int) -> dict[str, Any]:
    """Return the pool options of a worker's engines for `concurrency` jobs at once."""
    if make_url(url).get_backend_name() == "sqlite":
        return {}
    # The claim loop, the recorder, maintenance, and failures written at once by up to
    # `concurrency` jobs; idle overflow connections are closed and reopened, so keep them.
    return {"pool_size": min(concurrency, 20) + 2, "max_overflow": concurrency}


def create_job_sync_engine(url: URL, *, concurrency: int) -> Engine:
    """Create the sync engine that `ctx.transaction()` uses in plain `def run` jobs."""
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "a sync job's ctx.transaction() needs a SQLite file: an in-memory "
            "database is private to the worker's async engine"
        )
    return create_sync_engine(url, **pool_options(url, concurrency))
