"""Create the async engine a worker runs on, with the settings each database needs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .urls import to_async_url

# Seconds a SQLite connection waits for another writer before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """Return an `AsyncEngine` for `url`, switching plain URLs to their async driver.

    >>> engine = create_engine("postgresql://app@db.internal/app")  # runs on asyncpg
    """
    async_url = to_async_url(url)
    # hide_parameters keeps payloads and error texts out of exception messages and logs.
    kwargs.setdefault("hide_parameters", True)
    engine = create_async_engine(async_url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets readers (the application) proceed while a worker writes; the busy timeout makes a
    # writer wait for the lock instead of failing at once when several workers share the file.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()
