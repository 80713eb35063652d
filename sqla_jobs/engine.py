"""Create the engines a worker runs on (async; sync for plain `def run` jobs)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sqlalchemy_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .urls import to_async_url, to_sync_url

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


def create_sync_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Return a sync `Engine` for `url`, on psycopg (PostgreSQL) or pysqlite (SQLite).

    >>> engine = create_sync_engine("postgresql+asyncpg://app@db.internal/app")  # psycopg
    """
    sync_url = to_sync_url(url)
    kwargs.setdefault("hide_parameters", True)
    engine = create_sqlalchemy_engine(sync_url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
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
