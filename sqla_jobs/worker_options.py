"""The worker's options, defined once: defaults and checks shared by `Worker`, `Settings`, the CLI.

`WorkerOptionFields` declares each option with its default and its check; `WorkerOptions` is the
frozen, validated set a `Worker` runs with; `Settings` inherits the same fields, so an environment
variable, a CLI flag and a `Worker(...)` argument are refused for the same reasons.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError
from pydantic import model_validator as _model_validator

from .errors import ConfigurationError


def _seconds(value: Any) -> Any:
    # "0.25" in the environment means seconds, as a bare number does in Python.
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value  # ISO 8601 ("PT5M") or "HH:MM:SS": pydantic parses those
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be positive")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


def _queue_names(value: Any) -> Any:
    if isinstance(value, str):
        # Comma-separated, as in the environment and on the command line.
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_queue_names(queues: tuple[str, ...]) -> tuple[str, ...]:
    for queue in queues:
        if not queue or len(queue) > 255 or not queue.isprintable() or queue != queue.strip():
            raise ValueError(f"{queue!r} is not a queue name (1-255 printable characters)")
    return tuple(dict.fromkeys(queues))


PositiveDuration = Annotated[timedelta, BeforeValidator(_seconds), AfterValidator(_positive)]
NonNegativeDuration = Annotated[timedelta, BeforeValidator(_seconds), AfterValidator(_not_negative)]
QueueNames = Annotated[
    tuple[str, ...], BeforeValidator(_queue_names), AfterValidator(_check_queue_names)
]


class WorkerOptionFields(BaseModel):
    """The fields of the worker's options, with their defaults and checks (shared by `Settings`)."""

    queues: QueueNames = ()
    """Queues to serve; empty: the queues of the worker's tasks."""
    concurrency: int = Field(default=10, ge=1, le=10_000)
    """Jobs one worker process runs at once."""
    poll_interval: PositiveDuration = timedelta(seconds=1)
    """How often an idle worker looks for due jobs anyway (NOTIFY and timers come first)."""
    shutdown_timeout: NonNegativeDuration = timedelta(seconds=30)
    """How long running jobs get to finish after the first SIGTERM or SIGINT."""
    max_retries: int = Field(default=20, ge=0, le=1_000_000)
    """Retries of tasks that set no `max_retries` of their own."""
    heartbeat_interval: PositiveDuration = timedelta(seconds=5)
    """How often a worker renews its lease (its registration's heartbeat)."""
    heartbeat_timeout: PositiveDuration = timedelta(seconds=30)
    """A worker silent this long has lost its lease: its jobs are rescued by others."""

    @_model_validator(mode="after")
    def _lease_can_be_renewed(self) -> Self:
        # A worker stops claiming once its lease is half expired; beating at least twice in
        # that half keeps one slow beat from stopping it.
        if self.heartbeat_timeout < 4 * self.heartbeat_interval:
            raise ValueError(
                "heartbeat_timeout must be at least 4 times heartbeat_interval "
                f"(got {self.heartbeat_timeout.total_seconds():g} s and "
                f"{self.heartbeat_interval.total_seconds():g} s)"
            )
        return self


class WorkerOptions(WorkerOptionFields, frozen=True):
    """A validated, immutable set of worker options.

    >>> WorkerOptions(concurrency=20, queues="mail,default").queues
    ('mail', 'default')
    """

    @classmethod
    def checked(cls, **options: Any) -> WorkerOptions:
        """Return the options, or raise `ConfigurationError` naming each bad one."""
        try:
            return cls(**options)
        except ValidationError as exc:
            raise ConfigurationError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """Return pydantic's errors as one line per field: ``concurrency: must be >= 1``."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "options"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message}")
    return "; ".join(lines)
