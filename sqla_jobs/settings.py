"""Worker and CLI settings, from ``SQLA_JOBS_*`` environment variables or a `.env` file."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///sqla_jobs.db"

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]
CommaSeparated = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Worker settings; each field is read from ``SQLA_JOBS_<FIELD>``, e.g. `SQLA_JOBS_CONCURRENCY`.

    >>> Settings(database_url="postgresql://app@db/app", queues=["mail"]).concurrency
    10
    """

    model_config = SettingsConfigDict(
        env_prefix="SQLA_JOBS_", env_file=".env", extra="ignore", validate_default=True
    )

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    """Plain ``postgresql://`` URLs run on asyncpg, ``sqlite://`` ones on aiosqlite."""
    queues: CommaSeparated = Field(default_factory=list)
    """Queues to serve (comma-separated in the environment); empty: the queues of the tasks."""
    concurrency: int = Field(default=10, ge=1)
    processes: int = Field(default=1, ge=1)
    """Worker processes run under one supervisor; each runs `concurrency` jobs at once."""
    poll_interval: timedelta = timedelta(seconds=1)
    max_retries: int = Field(default=20, ge=0)
    lock_timeout: timedelta = timedelta(hours=2)
    shutdown_timeout: timedelta = timedelta(seconds=30)
    heartbeat_interval: timedelta = timedelta(seconds=5)
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    """A worker silent this long is dead: its jobs are retried (a failed attempt) by others."""
    imports: CommaSeparated = Field(default_factory=list)
    """Modules to import at start, so their Task classes register (comma-separated)."""
    log_level: LogLevel = "INFO"
    log_json: bool = False

    @field_validator("queues", "imports", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "poll_interval",
        "lock_timeout",
        "shutdown_timeout",
        "heartbeat_interval",
        "heartbeat_timeout",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        # "0.25" in the environment means seconds, as a bare number does in Python.
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value  # ISO 8601 ("PT5M") or "HH:MM:SS": pydantic parses those
        return value

    @field_validator("poll_interval", "lock_timeout", "heartbeat_interval", "heartbeat_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("shutdown_timeout")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
