"""The worker's options, defined once: defaults and checks shared by `Worker`, `Settings`, the CLI.

`WorkerOptionFields` declares each option with its default and its check; `WorkerOptions` is the
frozen, validated set a `Worker` runs with; `Settings` inherits the same fields, so an environment
variable, a CLI flag and a `Worker(...)` argument are refused for the same reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError
from pydantic import model_validator as _model_validator

from .errors import ConfigurationError
from .options import MAX_QUEUE_LIMIT, check_queue


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


MAX_CONCURRENCY = 10_000
"""The most jobs one worker process runs at once (`concurrency`, or its queues' slots in all)."""


def _split(value: str) -> list[str]:
    # Comma-separated, as in the environment and on the command line; a trailing comma is fine.
    return [part.strip() for part in value.split(",") if part.strip()]


def _queue_numbers(value: Any, *, what: str) -> Any:
    """Parse ``"mail=5,default=20"`` into ``{"mail": 5, "default": 20}``; other values pass."""
    if isinstance(value, str):
        numbers: dict[str, Any] = {}
        for part in _split(value):
            queue, equals, number = part.partition("=")
            if not equals:
                raise ValueError(f"{part!r} has no number: write queue=number ({what})")
            if queue.strip() in numbers:
                raise ValueError(f"queue {queue.strip()!r} is named twice ({what})")
            numbers[queue.strip()] = number.strip()
        value = numbers
    if isinstance(value, Mapping):
        checked: dict[str, int] = {}
        for queue, number in value.items():
            checked[check_queue(queue)] = _whole_number(queue, number, what=what)
        return checked
    return value


def _whole_number(queue: str, number: Any, *, what: str) -> int:
    if isinstance(number, str):
        try:
            return int(number)
        except ValueError:
            raise ValueError(
                f"queue {queue!r}: {what} must be a whole number, not {number!r}"
            ) from None
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"queue {queue!r}: {what} must be a whole number, not {number!r}")
    return number


def _queues(value: Any) -> Any:
    """Parse queue names (``"mail,default"``) or queues with slots (``"mail=5,default=20"``)."""
    if isinstance(value, str):
        parts = _split(value)
        if not any("=" in part for part in parts):
            return tuple(parts)
        if not all("=" in part for part in parts):
            raise ValueError(
                f"give every queue its number of slots, or none: {value!r} "
                "(mail=5,default=20 or mail,default)"
            )
    if isinstance(value, Mapping | str):
        return _queue_numbers(value, what="its number of slots")
    if isinstance(value, list):
        return tuple(value)
    return value


def _check_queues(queues: tuple[str, ...] | dict[str, int]) -> tuple[str, ...] | dict[str, int]:
    if isinstance(queues, dict):
        for queue, slots in queues.items():
            if not 1 <= slots <= MAX_CONCURRENCY:
                raise ValueError(
                    f"queue {queue!r}: its number of slots must be between 1 and "
                    f"{MAX_CONCURRENCY}, not {slots}"
                )
        if sum(queues.values()) > MAX_CONCURRENCY:
            raise ValueError(f"the queues' slots add up to more than {MAX_CONCURRENCY}")
        return queues
    # The same check as a task's `queue` option and `enqueue(queue=...)`.
    return tuple(dict.fromkeys(check_queue(queue) for queue in queues))


def _check_queue_limits(limits: dict[str, int]) -> dict[str, int]:
    for queue, max_running in limits.items():
        if not 0 <= max_running <= MAX_QUEUE_LIMIT:
            raise ValueError(
                f"queue {queue!r}: its limit must be between 0 and {MAX_QUEUE_LIMIT}, "
                f"not {max_running}"
            )
    return limits


PositiveDuration = Annotated[timedelta, BeforeValidator(_seconds), AfterValidator(_positive)]
NonNegativeDuration = Annotated[timedelta, BeforeValidator(_seconds), AfterValidator(_not_negative)]
Queues = Annotated[
    tuple[str, ...] | dict[str, int], BeforeValidator(_queues), AfterValidator(_check_queues)
]
"""Queue names (one pool of `concurrency` slots), or each queue with its own number of slots."""
QueueLimits = Annotated[
    dict[str, int],
    BeforeValidator(partial(_queue_numbers, what="its limit")),
    AfterValidator(_check_queue_limits),
]
"""Each queue's cluster-wide limit of running jobs: ``{"payments": 2}`` or ``"payments=2"``."""


class WorkerOptionFields(BaseModel):
    """The fields of the worker's options, with their defaults and checks (shared by `Settings`)."""

    queues: Queues = ()
    """Queues to serve; empty: the queues of the worker's tasks. Names share one pool of
    `concurrency` slots; ``{"mail": 5, "default": 20}`` gives each queue slots of its own."""
    concurrency: int = Field(default=10, ge=1, le=MAX_CONCURRENCY)
    """Jobs one worker process runs at once (unused when `queues` gives each its slots)."""
    queue_limits: QueueLimits = Field(default_factory=dict)
    """Cluster-wide limits of running jobs per queue, stored in the database at start."""
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
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    """Serve Prometheus metrics on this port (``GET /metrics``; needs ``sqla_jobs[metrics]``);
    None: no server. 0 picks a free port."""

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

    @property
    def queue_names(self) -> tuple[str, ...]:
        """The queues named, with or without their own slots."""
        return tuple(self.queues)

    @property
    def queue_concurrency(self) -> dict[str, int] | None:
        """Each queue's own slots, or None: the queues share `concurrency` slots."""
        return dict(self.queues) if isinstance(self.queues, dict) else None

    @property
    def total_concurrency(self) -> int:
        """Jobs run at once: the queues' own slots in all, else `concurrency`."""
        slots = self.queue_concurrency
        return self.concurrency if slots is None else sum(slots.values())


class WorkerOptions(WorkerOptionFields, frozen=True):
    """A validated, immutable set of worker options.

    >>> WorkerOptions(concurrency=20, queues="mail,default").queues
    ('mail', 'default')
    >>> WorkerOptions(queues="mail=5,default=20").queue_concurrency
    {'mail': 5, 'default': 20}
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
