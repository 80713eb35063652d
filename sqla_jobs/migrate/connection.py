"""Run migration work on a short-lived async connection, and say in one sentence why it failed.

Owns the engine and connection `upgrade`, `downgrade` and `current` use (a `NullPool` engine,
driven by `asyncio.run`), and the translation of driver and Alembic failures into
`ConfigurationError` and `MigrationError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from sqla_jobs.errors import ConfigurationError, MigrationError
from sqla_jobs.urls import display_url

_T = TypeVar("_T")


def run_on(url: URL, work: Callable[[Connection], _T]) -> _T:
    """Return `work` run on a connection to `url`, in an event loop of its own."""
    return asyncio.run(_run_async(url, work))


async def _run_async(url: URL, work: Callable[[Connection], _T]) -> _T:
    # Alembic is imported when a migration runs, not when sqla_jobs is.
    from alembic.util import CommandError

    shown = display_url(url)
    try:
        engine = create_async_engine(url, poolclass=NullPool)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"cannot use the database URL {shown}: {exc}") from exc
    _check_sqlite_directory(url)
    try:
        try:
            connection = await engine.connect()
        except (SQLAlchemyError, OSError) as exc:
            raise MigrationError(f"cannot connect to {shown}: {_reason(exc)}") from exc
        try:
            return await connection.run_sync(work)
        except CommandError as exc:
            raise MigrationError(f"cannot migrate {shown}: {exc}") from exc
        except SQLAlchemyError as exc:
            raise MigrationError(f"migrating {shown} failed: {_reason(exc)}") from exc
        finally:
            await connection.close()
    finally:
        await engine.dispose()


def _check_sqlite_directory(url: URL) -> None:
    # SQLite creates a missing file but not its directory; aiosqlite's failed connect also
    # leaves a thread reporting to the closed event loop, so say it before connecting.
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    if database.startswith("file:"):
        return
    directory = Path(database).parent
    if not directory.is_dir():
        raise MigrationError(
            f"cannot connect to {display_url(url)}: the directory {directory} does not exist"
        )


def _reason(exc: BaseException) -> str:
    """Return the first line of the driver's message, without SQLAlchemy's decorations."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
