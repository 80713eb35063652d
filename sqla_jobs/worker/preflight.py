"""Before a worker command starts: say in one sentence what is wrong, rather than retry forever.

A database that is down is waited for (workers often start before their database), one log
line per attempt, up to `startup_timeout`. A database that answers but refuses (no such
database, wrong password), a URL sqla_jobs cannot use, or a schema that is not at this
version's head stops the command at once, with one sentence saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import timedelta

from loguru import logger
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from sqla_jobs import migrate
from sqla_jobs.database_errors import DATABASE_ERRORS, summarize_error
from sqla_jobs.engine import create_engine
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.urls import display_url

RETRY_EVERY = timedelta(seconds=2)


class StartupError(ConfigurationError):
    """The worker cannot start; the message says why, in one sentence."""


class StoppedWhileWaiting(Exception):
    """SIGTERM or SIGINT arrived while the command waited for the database: nothing to clean up."""


def check_database(url: URL, *, startup_timeout: timedelta) -> None:
    """Wait for the database at `url` to answer, then check its sqla_jobs schema is at head.

    Raises `StartupError` with one sentence when the database stays unreachable for
    `startup_timeout`, refuses the connection, or holds an older (or no) schema.
    """
    asyncio.run(_wait_for_database(url, startup_timeout))
    _check_schema(url)


async def _wait_for_database(url: URL, startup_timeout: timedelta) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        await _connect_when_up(url, startup_timeout, stop)
        # A signal that came while a database that is up answered must still stop the command.
        if stop.is_set():
            raise StoppedWhileWaiting
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _connect_when_up(url: URL, startup_timeout: timedelta, stop: asyncio.Event) -> None:
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + startup_timeout.total_seconds()
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(RETRY_EVERY.total_seconds() * 2):
                    async with engine.connect() as connection:
                        await connection.execute(text("SELECT 1"))
                return
            except DATABASE_ERRORS as exc:
                reason = summarize_error(str(exc)) or type(exc).__name__
                if not _is_transient(exc):
                    raise StartupError(f"cannot connect to {display_url(url)}: {reason}") from None
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"cannot connect to {display_url(url)} after "
                        f"{startup_timeout.total_seconds():g} s: {reason}"
                    ) from None
                logger.warning(
                    "database not reachable yet; waiting",
                    database=display_url(url),
                    attempt=attempt,
                    error=reason,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_EVERY.total_seconds())
                if stop.is_set():
                    raise StoppedWhileWaiting from None
    finally:
        await engine.dispose()


def _is_transient(exc: BaseException) -> bool:
    """Tell whether `exc` looks like a database that is down or starting (worth waiting for)."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    for error in (cause, getattr(cause, "__cause__", None), exc.__cause__):
        if isinstance(error, OSError | TimeoutError | ConnectionError):
            return True
        if type(error).__name__ in {"CannotConnectNowError", "TooManyConnectionsError"}:
            return True
    text_ = str(exc).lower()
    return "connection refused" in text_ or "the database system is starting up" in text_


def _check_schema(url: URL) -> None:
    try:
        current = migrate.current(url)
    except DATABASE_ERRORS as exc:
        reason = summarize_error(str(exc))
        raise StartupError(
            f"cannot read the schema version of {display_url(url)}: {reason}"
        ) from None
    problem = migrate.schema_problem(current, database=display_url(url))
    if problem is not None:
        raise StartupError(problem)
