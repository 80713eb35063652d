"""Database URLs: pick the async driver sqla_jobs runs on, and hide passwords when shown."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Plain or sync-driver URLs are driven through the async driver of the same database.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}

_SYNC_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite+aiosqlite": "sqlite",
}


def to_async_url(url: str | URL) -> URL:
    """Return `url` with an async driver, e.g. ``postgresql://h/db`` → ``postgresql+asyncpg://h/db``."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def to_sync_url(url: str | URL) -> URL:
    """Return `url` with a sync driver (psycopg, pysqlite), for Alembic or plain Sessions."""
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def is_async_url(url: str | URL) -> bool:
    """Tell whether `url` names a driver SQLAlchemy can run with `create_async_engine`."""
    return make_url(url).get_dialect().is_async


def display_url(url: str | URL) -> str:
    """Render `url` for logs and errors, with the password masked."""
    return make_url(url).render_as_string(hide_password=True)


SUPPORTED_BACKENDS = ("postgresql", "sqlite")


def checked_url(url: str | URL) -> URL:
    """Parse `url`, or raise `ConfigurationError` saying in one sentence what is wrong with it.

    >>> checked_url("mysql://app@db/app")
    Traceback (most recent call last):
    ConfigurationError: sqla_jobs runs on PostgreSQL and SQLite, not mysql (mysql://app@db/app)
    """
    from .errors import ConfigurationError

    example = "e.g. postgresql://user:password@host:5432/database"
    try:
        parsed = make_url(url)
    except (ValueError, TypeError, ArgumentError):
        raise ConfigurationError(f"the database URL cannot be parsed ({example})") from None
    try:
        parsed.port  # noqa: B018 - a port that is not a number fails when read
    except ValueError:
        host = parsed.host or ""
        raise ConfigurationError(
            f"the database URL's port is not a number (host {host!r}; {example})"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigurationError(
            f"sqla_jobs runs on PostgreSQL and SQLite, not {parsed.get_backend_name()} "
            f"({display_url(parsed)})"
        )
    return parsed
