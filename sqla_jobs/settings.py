"""Worker and CLI settings, from ``SQLA_JOBS_*`` environment variables or a `.env` file."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .worker_options import (
    PositiveDuration,
    QueueLimits,
    Queues,
    WorkerOptionFields,
    WorkerOptions,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///sqla_jobs.db"

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]
CommaSeparated = Annotated[list[str], NoDecode]


class Settings(WorkerOptionFields, BaseSettings):
    """Worker settings; each field is read from ``SQLA_JOBS_<FIELD>``, e.g. `SQLA_JOBS_CONCURRENCY`.

    The worker's own options (queues, concurrency, intervals, retries) are those of
    `WorkerOptions`, with the same defaults and checks.

    >>> Settings(database_url="postgresql://app@db/app", queues=["mail"]).concurrency
    10
    """

    model_config = SettingsConfigDict(
        env_prefix="SQLA_JOBS_", env_file=".env", extra="ignore", validate_default=True
    )

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    """Plain ``postgresql://`` URLs run on asyncpg, ``sqlite://`` ones on aiosqlite."""
    queues: Annotated[Queues, NoDecode] = ()
    """Queues to serve, comma-separated in the environment: ``mail,default`` (one pool of
    `concurrency` slots) or ``mail=5,default=20`` (slots of their own); empty: the tasks' queues."""
    queue_limits: Annotated[QueueLimits, NoDecode] = Field(default_factory=dict)
    """Cluster-wide limits of running jobs, ``payments=2,mail=10``, stored at worker start."""
    processes: int = Field(default=1, ge=1, le=256)
    """Worker processes run under one supervisor; each runs `concurrency` jobs at once."""
    imports: CommaSeparated = Field(default_factory=list)
    """Modules to import at start, so their Task classes register (comma-separated)."""
    state: str | None = None
    """``module:factory`` building the `ctx.state` of jobs (see `sqla_jobs.worker.state`)."""
    hooks: CommaSeparated = Field(default_factory=list)
    """Lifecycle hooks, ``module:attribute`` (comma-separated): objects with `on_job_start` /
    `on_job_end` methods, or classes made with no arguments (see `sqla_jobs.hooks`)."""
    startup_timeout: PositiveDuration = timedelta(seconds=60)
    """How long the worker command waits for a database that is down when it starts."""
    log_level: LogLevel = "INFO"
    log_json: bool = False

    def worker_options(self) -> WorkerOptions:
        """Return the worker's options held by these settings (already validated)."""
        return WorkerOptions(**self.model_dump(include=set(WorkerOptions.model_fields)))

    @field_validator("imports", "hooks", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
