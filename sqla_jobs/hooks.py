"""Lifecycle hooks: the application's callbacks when a worker starts and ends each job.

A worker calls every `on_job_start` hook just before a job's code runs and every `on_job_end`
hook once its outcome is decided (before it is written back). Metrics (`sqla_jobs.metrics`)
and tracing (`sqla_jobs.tracing`) are built on them. A hook is a plain or async function of one
argument, or an object with `on_job_start` and/or `on_job_end` methods; a hook that raises is
logged and skipped, and never changes the job's outcome or stops the worker.

Both hooks of one job run in the job's own asyncio task, the job's code in between: a context
variable the start hook sets (a tracing span, say) is what the job's code and its end hook see,
and a plain ``def run`` job's thread sees it too.
"""

from __future__ import annotations

import importlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeAlias

from loguru import logger

from .context import ClaimedJob
from .errors import ConfigurationError

OutcomeName: TypeAlias = Literal[
    "success", "retry", "dead", "cancelled", "snoozed", "rescued", "released"
]
"""What became of a job, as hooks, metrics and the per-minute counters name it.

``success``: done (its row deleted); ``retry``: failed, runs again after a backoff; ``dead``:
moved to the dead-letter table (retries spent, ``Discard``, too many snoozes); ``cancelled``:
cancelled on request while running, dead-lettered; ``snoozed``: raised ``Snooze``; ``rescued``:
a job of a dead worker that this worker rescued (recorded as a failed attempt; it never ran
here, so no `on_job_start` came before); ``released``: interrupted by this worker's shutdown,
its lock released so that it runs again.
"""
OUTCOMES: tuple[OutcomeName, ...] = (
    "success",
    "retry",
    "dead",
    "cancelled",
    "snoozed",
    "rescued",
    "released",
)


@dataclass(frozen=True, slots=True)
class JobStart:
    """A job a worker is about to run."""

    id: str
    """The job's id (a UUID, as text)."""
    name: str
    """The task name."""
    queue: str
    attempt: int
    """1 for the first run, 2 after one failure, …; snoozes do not count."""
    run_at: datetime
    """When the job became due (enqueued, scheduled or retried), by the database's clock."""
    started_at: datetime
    """When the worker started it (UTC, the worker's clock)."""
    worker_id: str
    trace_context: str | None = None
    """The W3C ``traceparent`` stored at enqueue when tracing is on (see `sqla_jobs.tracing`)."""


class _JobRow(Protocol):
    """What `starting_now` reads of a job: a claimed job, or a lost one read for its rescue."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def error_count(self) -> int: ...
    @property
    def run_at(self) -> datetime: ...


def starting_now(job: _JobRow, worker_id: str, *, trace_context: str | None = None) -> JobStart:
    """Return `job` as a `JobStart`: its next attempt, started now by `worker_id`."""
    return JobStart(
        id=str(job.id),
        name=job.name,
        queue=job.queue,
        attempt=job.error_count + 1,
        run_at=job.run_at,
        started_at=datetime.now(UTC),
        worker_id=worker_id,
        trace_context=trace_context,
    )


@dataclass(frozen=True, slots=True)
class JobEnd:
    """A job whose outcome was decided, about to be written back."""

    job: JobStart
    """The job, as `on_job_start` saw it (for ``rescued``: as read from its row)."""
    outcome: OutcomeName
    duration: timedelta | None
    """How long its code ran; None for ``rescued`` (it did not run here)."""
    error: str | None = None
    """The error and traceback recorded on the row, if the attempt failed."""
    exception: BaseException | None = None
    """The exception the job raised, when this worker caught it (not for ``rescued``)."""


OnJobStart: TypeAlias = Callable[[JobStart], Awaitable[None] | None]
OnJobEnd: TypeAlias = Callable[[JobEnd], Awaitable[None] | None]


class JobHooks:
    """The hooks one worker calls; built by `JobHooks.of`, which returns None without any."""

    def __init__(
        self, on_start: Sequence[Callable[..., object]], on_end: Sequence[Callable[..., object]]
    ) -> None:
        self.on_start = tuple(on_start)
        self.on_end = tuple(on_end)
        self._running: dict[uuid.UUID, JobStart] = {}

    @classmethod
    def of(
        cls,
        hooks: Iterable[object] = (),
        *,
        on_job_start: OnJobStart | Iterable[OnJobStart] | None = None,
        on_job_end: OnJobEnd | Iterable[OnJobEnd] | None = None,
    ) -> JobHooks | None:
        """Gather hook objects and functions; None when there is none (the worker then does
        no hook work at all).

        >>> JobHooks.of([default_metrics()], on_job_end=alert_on_dead_letter)
        """
        starts, ends = (
            _functions(on_job_start, "on_job_start"),
            _functions(on_job_end, "on_job_end"),
        )
        for hook in hooks:
            start, end = getattr(hook, "on_job_start", None), getattr(hook, "on_job_end", None)
            if start is None and end is None:
                raise ConfigurationError(
                    f"hook {hook!r} has neither an on_job_start nor an on_job_end method"
                )
            starts += _functions(start, "on_job_start")
            ends += _functions(end, "on_job_end")
        return cls(starts, ends) if starts or ends else None

    async def job_started(self, job: ClaimedJob, worker_id: str) -> None:
        """Call every `on_job_start` hook for `job`; one that raises is logged and skipped."""
        start = starting_now(job, worker_id, trace_context=job.trace_context)
        self._running[job.id] = start
        for hook in self.on_start:
            await _call(hook, start)

    async def job_ended(
        self, job: ClaimedJob, outcome: OutcomeName, started: float, decided: object
    ) -> None:
        """Call every `on_job_end` hook for `job`, started at `started` (`time.monotonic()`),
        whose `decided` outcome (None: released) is named `outcome`."""
        start = self._running.pop(job.id, None)
        if start is None:
            return  # stopped before its start hooks were called: they never saw it
        await self.emit(
            JobEnd(
                job=start,
                outcome=outcome,
                duration=timedelta(seconds=time.monotonic() - started),
                error=getattr(decided, "error", None),
                exception=getattr(decided, "exception", None),
            )
        )

    async def emit(self, end: JobEnd) -> None:
        """Call every `on_job_end` hook with `end`; one that raises is logged and skipped."""
        for hook in self.on_end:
            await _call(hook, end)


async def _call(
    hook: Callable[[JobStart], object] | Callable[[JobEnd], object], event: object
) -> None:
    try:
        result = hook(event)  # type: ignore[arg-type]  # each list holds hooks of its event
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        logger.opt(exception=exc).error("job hook raised; ignored", hook=_name(hook))


def _functions(value: object, what: str) -> list[Callable[..., object]]:
    if value is None:
        return []
    functions = [value] if callable(value) else list(value)  # type: ignore[call-overload]
    for function in functions:
        if not callable(function):
            raise ConfigurationError(f"{what} must be callable, not {function!r}")
    return functions


def _name(hook: object) -> str:
    return str(getattr(hook, "__qualname__", None) or type(hook).__qualname__)


def load_hooks(names: Iterable[str]) -> list[object]:
    """Import hooks named ``module:attribute``; a class is instantiated with no arguments.

    >>> load_hooks(["sqla_jobs.tracing:TracingHooks", "myapp.jobs:audit_hooks"])
    """
    loaded = []
    for name in names:
        module_name, colon, attribute = name.partition(":")
        if not colon or not module_name or not attribute:
            raise ConfigurationError(f"hook {name!r} must be written module:attribute")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load hook {name!r}: {exc}") from exc
        loaded.append(value() if isinstance(value, type) else value)
    return loaded
