"""Periodic jobs: a task enqueued on a cron expression or a fixed interval, once per slot.

A schedule's *slots* are the instants it is due: those of its cron expression in its time
zone (computed by `cronsim`, so time zones and DST transitions behave as that library
defines, following Debian cron), or the multiples of `every` since the Unix epoch. Workers
enqueue each slot's job exactly once across all processes and hosts, with no leader: a row
(schedule name, slot instant) of ``sqla_jobs_periodic_slot`` is inserted in the transaction
that inserts the job, and its primary key lets only one of them commit (see
`sqla_jobs.worker.scheduler`).

Schedules are declared at import time next to the tasks, and register themselves by name as
tasks do; a worker runs the registered schedules of the tasks it serves, or those passed as
``Worker(periodic=[...])``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .enqueue import JobRow, Overrides, job_row
from .errors import ConfigurationError, EnqueueError
from .ids import new_job_id
from .options import check_name
from .tasks import Task, is_concrete

CatchUp = Literal["none", "one"] | timedelta
"""What a schedule does with the slots it missed (downtime, an outage): see `periodic`."""

LATE_AFTER = timedelta(minutes=1)
"""A slot enqueued later than this after its instant is late, as is one a later slot already
follows: late slots are the "missed" ones the catch-up policy applies to."""

MAX_CATCH_UP = 1000
"""The most slots of one schedule a worker enqueues at once (the latest ones)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_ZERO = timedelta()


@dataclass(frozen=True, eq=False)
class Periodic:
    """A task to enqueue on a schedule; build it with `periodic()`."""

    name: str
    task: Task
    cron: str | None
    every: timedelta | None
    timezone: str
    catch_up: CatchUp
    zone: ZoneInfo = field(repr=False)

    @property
    def task_name(self) -> str:
        """The name of the task this schedule enqueues."""
        return type(self.task).__task_options__.name

    @property
    def definition(self) -> tuple[object, ...]:
        """What makes two declarations of one name the same schedule."""
        payload = self.task.model_dump_json()
        return (self.task_name, payload, self.cron, self.every, self.timezone, self.catch_up)

    def describe(self) -> str:
        """Return the schedule as a person would write it: its cron expression, or its interval."""
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every}"

    def job_row(self, slot_at: datetime) -> JobRow:
        """Return a new job row of this schedule's task for `slot_at`; its `context` says why."""
        overrides = Overrides.checked(
            priority=None,
            queue=None,
            context=f"periodic {self.name} at {slot_at.isoformat()}",
            max_payload_bytes=None,
            timeout=None,
        )
        return job_row(self.task, overrides, new_job_id().hex)

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """Return this schedule's latest slot at or before `instant` (None: none in 50 years)."""
        if self.every is not None:
            return _EPOCH + (instant - _EPOCH) // self.every * self.every
        assert self.cron is not None
        # cronsim steps back from the whole second when given microseconds, so the
        # first candidate is `instant` itself (slots are whole seconds).
        start = instant.astimezone(self.zone).replace(microsecond=1)
        try:
            return next(CronSim(self.cron, start, reverse=True)).astimezone(UTC)
        except StopIteration:
            return None

    def next_after(self, instant: datetime) -> datetime | None:
        """Return this schedule's first slot after `instant` (None: none in 50 years)."""
        if self.every is not None:
            latest = self.latest_at_or_before(instant)
            assert latest is not None
            return latest + self.every
        assert self.cron is not None
        try:
            return next(CronSim(self.cron, instant.astimezone(self.zone))).astimezone(UTC)
        except StopIteration:
            return None

    def slots_between(self, start: datetime, end: datetime, *, limit: int) -> list[datetime]:
        """Return the slots in (`start`, `end`], oldest first; the latest `limit` if more."""
        slots: list[datetime] = []
        slot = self.next_after(start)
        while slot is not None and slot <= end:
            slots.append(slot)
            if len(slots) > limit:
                del slots[0]
            slot = self.next_after(slot)
        return slots

    def slots_to_enqueue(self, *, after: datetime, now: datetime) -> list[datetime]:
        """Return the slots in (`after`, `now`] to enqueue now, oldest first.

        The latest due slot is on time while it is at most `LATE_AFTER` old, and is always
        enqueued then; every other due slot was missed (a later one follows it, or it is too
        old), and `catch_up` decides: ``"none"`` enqueues none of them, ``"one"`` the latest,
        a `timedelta` all of those within that long before `now` (at most `MAX_CATCH_UP`).
        `after` is the latest slot already handled, so nothing at or before it comes back.
        """
        latest = self.latest_at_or_before(now)
        if latest is None or latest <= after:
            return []
        on_time = now - latest <= LATE_AFTER
        match self.catch_up:
            case "none":
                return [latest] if on_time else []
            case "one":
                if not on_time:
                    return [latest]
                previous = self.latest_at_or_before(latest - timedelta(microseconds=1))
                return [previous, latest] if previous is not None and previous > after else [latest]
            case timedelta() as window:
                slots = self.slots_between(max(after, now - window), now, limit=MAX_CATCH_UP)
                return slots if not on_time or latest in slots else [*slots, latest]


def periodic(
    task: Task,
    *,
    name: str,
    cron: str | None = None,
    every: timedelta | None = None,
    timezone: str = "UTC",
    catch_up: CatchUp = "one",
) -> Periodic:
    """Declare that `task` is enqueued on a schedule: a `cron` expression or `every` interval.

    `cron` takes five fields (minute to day of week) or six (seconds first), read in
    `timezone` (an IANA name); DST transitions follow `cronsim` (as Debian cron: a slot that
    falls in a skipped hour runs when the clocks jump, one in a repeated hour runs once).
    `every` slots are the multiples of `every` since the Unix epoch, so ``every=timedelta(
    hours=1)`` is due on the hour, whatever the time zone (`timezone` is for `cron` only).

    After downtime (no worker running the schedule) or an outage, `catch_up` says what to do
    with the slots missed: ``"one"`` (default) enqueues the latest of them, ``"none"``
    skips them, a `timedelta` enqueues every one within that window. A slot is late, so
    missed, once a later slot is due, or over `LATE_AFTER` after its instant.

    The schedule registers itself under `name` (declare it at import time, beside the task);
    a second declaration of `name` must be the same schedule. Wrong arguments raise
    `ConfigurationError` at once.

    >>> periodic(SendReport(day="today"), cron="0 * * * *", name="hourly-report",
    ...          timezone="Europe/Paris")
    >>> periodic(Cleanup(), every=timedelta(minutes=5), name="cleanup")
    """
    schedule = build_periodic(
        task, name=name, cron=cron, every=every, timezone=timezone, catch_up=catch_up
    )
    _register(schedule)
    return schedule


def build_periodic(
    task: object,
    *,
    name: object,
    cron: object,
    every: object,
    timezone: object,
    catch_up: object,
) -> Periodic:
    """Check a schedule's arguments and return it, without registering it."""
    try:
        checked_name = check_name(name)
    except ValueError as exc:
        raise ConfigurationError(f"periodic schedule {name!r}: {exc}") from exc

    def fail(message: str) -> ConfigurationError:
        return ConfigurationError(f"periodic schedule {checked_name!r}: {message}")

    if not isinstance(task, Task):
        raise fail(f"takes a Task instance, not {type(task).__name__}")
    if not is_concrete(type(task)):
        raise fail(f"{type(task).__qualname__} does not implement run()")
    if (cron is None) == (every is None):
        raise fail("pass exactly one of cron= and every=")
    if not isinstance(timezone, str):
        raise fail("timezone must be an IANA time zone name such as 'Europe/Paris'")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise fail(f"unknown time zone {timezone!r}") from exc
    if every is not None:
        if not isinstance(every, timedelta) or every < _SECOND:
            raise fail("every must be a timedelta of at least one second")
        if timezone != "UTC":
            raise fail(
                "timezone applies to cron schedules only; every= slots are multiples of "
                "the interval since the Unix epoch"
            )
    if cron is not None:
        _check_cron(cron, zone, fail)
    if not (catch_up in ("none", "one") or (isinstance(catch_up, timedelta) and catch_up > _ZERO)):
        raise fail('catch_up must be "none", "one" or a positive timedelta (a window)')
    schedule = Periodic(
        name=checked_name,
        task=task,
        cron=cron if isinstance(cron, str) else None,
        every=every if isinstance(every, timedelta) else None,
        timezone=timezone,
        catch_up=catch_up,
        zone=zone,
    )
    try:
        schedule.job_row(_EPOCH)  # the payload is checked now, not at its first slot
    except EnqueueError as exc:
        raise fail(str(exc)) from exc
    return schedule


def _check_cron(cron: object, zone: ZoneInfo, fail: Callable[[str], ConfigurationError]) -> None:
    if not isinstance(cron, str):
        raise fail("cron must be a string such as '0 * * * *'")
    try:
        next(CronSim(cron, datetime.now(zone)))
    except CronSimError as exc:
        raise fail(f"invalid cron expression {cron!r}: {exc}") from exc
    except StopIteration:
        raise fail(f"the cron expression {cron!r} never matches") from None


_registry: dict[str, Periodic] = {}


def _register(schedule: Periodic) -> None:
    existing = _registry.get(schedule.name)
    if existing is not None and existing.definition != schedule.definition:
        raise ConfigurationError(
            f"periodic schedule name {schedule.name!r} is declared twice with different "
            f"definitions: {existing.describe()} of {existing.task_name!r} and "
            f"{schedule.describe()} of {schedule.task_name!r}"
        )
    _registry[schedule.name] = schedule


def registered_schedules() -> Mapping[str, Periodic]:
    """Return a read-only view of every registered schedule by name."""
    return MappingProxyType(_registry)


def unregister(name: str) -> None:
    """Forget the registered schedule `name` (for tests that declare schedules)."""
    _registry.pop(name, None)


def checked_schedules(schedules: Iterable[Periodic]) -> tuple[Periodic, ...]:
    """Return `schedules` as a tuple, checking their types and that names are unique."""
    by_name: dict[str, Periodic] = {}
    for schedule in schedules:
        if not isinstance(schedule, Periodic):
            raise ConfigurationError(
                f"periodic takes schedules made by periodic(), not {type(schedule).__name__}"
            )
        existing = by_name.get(schedule.name)
        if existing is not None and existing.definition != schedule.definition:
            raise ConfigurationError(
                f"two different periodic schedules are named {schedule.name!r}"
            )
        by_name[schedule.name] = schedule
    return tuple(by_name.values())
