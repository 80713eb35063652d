"""The per-call options of `enqueue()` and the bulk forms, each checked once per call.

Owns `Schedule` (when the new jobs are due) and `Overrides` (priority, queue, context, payload
limit and timeout that replace the task's class options); a bad value raises `EnqueueError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import EnqueueError
from .options import (
    check_context,
    check_max_payload_bytes,
    check_priority,
    check_queue,
    check_timeout,
)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When new jobs are due: at `run_at`, `delay` after their insert, or (neither) at once."""

    run_at: datetime | None
    delay: timedelta | None

    @classmethod
    def checked(cls, run_at: object, delay: object) -> Schedule:
        if run_at is not None and delay is not None:
            raise EnqueueError("pass run_at or delay, not both")
        return cls(
            run_at=None if run_at is None else _check_run_at(run_at),
            delay=None if delay is None else _check_delay(delay),
        )


@dataclass(frozen=True, slots=True)
class Overrides:
    """The per-call options of `enqueue()` and the bulk forms, each validated once."""

    priority: int | None
    queue: str | None
    context: str
    max_payload_bytes: int | None
    timeout_seconds: float | None

    @classmethod
    def checked(
        cls,
        *,
        priority: object,
        queue: object,
        context: object,
        max_payload_bytes: object,
        timeout: object,
    ) -> Overrides:
        # The very checks of Task class options (sqla_jobs.options), as EnqueueError here.
        try:
            checked_timeout = check_timeout(timeout)
            return cls(
                priority=None if priority is None else check_priority(priority),
                queue=None if queue is None else check_queue(queue),
                context=check_context(context),
                max_payload_bytes=(
                    None
                    if max_payload_bytes is None
                    else check_max_payload_bytes(max_payload_bytes)
                ),
                timeout_seconds=None
                if checked_timeout is None
                else checked_timeout.total_seconds(),
            )
        except ValueError as exc:
            raise EnqueueError(str(exc)) from exc


def _check_run_at(run_at: object) -> datetime:
    if not isinstance(run_at, datetime):
        raise EnqueueError("run_at must be a datetime")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise EnqueueError(
            "run_at must be timezone-aware (e.g. datetime.now(UTC) + ...): a naive datetime "
            "is ambiguous"
        )
    return run_at


def _check_delay(delay: object) -> timedelta:
    if not isinstance(delay, timedelta):
        raise EnqueueError("delay must be a timedelta")
    return delay
