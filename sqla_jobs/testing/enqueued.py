"""What did the code under test enqueue: `assert_enqueued`, `refute_enqueued`, `all_enqueued`.

Each looks through the caller's own session, so it sees jobs added but not flushed, flushed
but not committed, and committed alike, each once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from sqla_jobs.models import Job
from sqla_jobs.tasks import Task, is_concrete

T = TypeVar("T", bound=Task)
R = TypeVar("R")

# A failure message lists at most this many jobs: enough to spot the near miss.
MAX_LISTED_JOBS = 20


@overload
def assert_enqueued(
    session: Session,
    task_class: type[Task],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    count: int | None = None,
    **field_values: Any,
) -> None: ...
@overload
def assert_enqueued(
    session: AsyncSession,
    task_class: type[Task],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    count: int | None = None,
    **field_values: Any,
) -> Coroutine[Any, Any, None]: ...
def assert_enqueued(
    session: Session | AsyncSession,
    task_class: type[Task],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    count: int | None = None,
    **field_values: Any,
) -> Coroutine[Any, Any, None] | None:
    """Fail unless `session` sees a job of `task_class` matching the criteria (`count` of them).

    Fields are compared on the task decoded from each job's payload; `queue`, `priority` and
    `context` on the job. A task field whose name is one of those options goes in the `fields`
    mapping instead. Without `count`, one or more matching jobs pass. The failure message lists
    the jobs of `task_class` that were enqueued and how each differs.

    >>> assert_enqueued(session, SendEmail, to="a@example.com", queue="mail")
    >>> await assert_enqueued(async_session, SendEmail, {"priority": "high"}, count=2)
    """
    __tracebackhide__ = True
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise TypeError("count must be an int of at least 0")
    match = _Match.of(task_class, fields, field_values, queue, priority, context)

    def check(seen: _Seen) -> None:
        __tracebackhide__ = True
        matching = sum(match.matches(job) for job in seen.jobs)
        if matching > 0 if count is None else matching == count:
            return
        wanted = "a job" if count is None else f"{count} job{'' if count == 1 else 's'}"
        _fail(f"expected {wanted} of {match.describe()}; found {matching}", match, seen)

    return _answer(session, match, check)


@overload
def refute_enqueued(
    session: Session,
    task_class: type[Task],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    **field_values: Any,
) -> None: ...
@overload
def refute_enqueued(
    session: AsyncSession,
    task_class: type[Task],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    **field_values: Any,
) -> Coroutine[Any, Any, None]: ...
def refute_enqueued(
    session: Session | AsyncSession,
    task_class: type[Task],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    **field_values: Any,
) -> Coroutine[Any, Any, None] | None:
    """Fail if `session` sees any job of `task_class` matching the criteria.

    The criteria are those of `assert_enqueued`; none at all means no job of `task_class`.

    >>> refute_enqueued(session, SendEmail, to="blocked@example.com")
    """
    __tracebackhide__ = True
    match = _Match.of(task_class, fields, field_values, queue, priority, context)

    def check(seen: _Seen) -> None:
        __tracebackhide__ = True
        matching = sum(match.matches(job) for job in seen.jobs)
        if matching:
            _fail(f"expected no job of {match.describe()}; found {matching}", match, seen)

    return _answer(session, match, check)


@overload
def all_enqueued(
    session: Session,
    task_class: type[T],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    **field_values: Any,
) -> list[T]: ...
@overload
def all_enqueued(
    session: AsyncSession,
    task_class: type[T],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    **field_values: Any,
) -> Coroutine[Any, Any, list[T]]: ...
def all_enqueued(
    session: Session | AsyncSession,
    task_class: type[T],
    fields: Mapping[str, Any] | None = None,
    /,
    *,
    queue: str | None = None,
    priority: int | None = None,
    context: str | None = None,
    **field_values: Any,
) -> list[T] | Coroutine[Any, Any, list[T]]:
    """Return the tasks of every job of `task_class` that `session` sees (matching the criteria).

    Committed jobs come first, oldest first; the order among jobs of one transaction is not
    defined. A payload that no longer validates as `task_class` fails the test.

    >>> [email.to for email in all_enqueued(session, SendEmail)]
    ['a@example.com', 'b@example.com']
    """
    __tracebackhide__ = True
    match = _Match.of(task_class, fields, field_values, queue, priority, context)

    def collect(seen: _Seen) -> list[T]:
        __tracebackhide__ = True
        tasks = []
        for job in seen.jobs:
            if isinstance(job.task, ValidationError):
                raise AssertionError(
                    f"job {job.id} has a payload that does not validate as "
                    f"{task_class.__qualname__}: {job.task}"
                )
            if match.matches(job):
                assert isinstance(job.task, task_class)
                tasks.append(job.task)
        return tasks

    return _answer(session, match, collect)


@dataclass(frozen=True, slots=True)
class _EnqueuedJob:
    """A job of the task asked about, as the session sees it, with its decoded task."""

    id: uuid.UUID
    queue: str
    priority: int
    context: str
    task: Task | ValidationError
    """The payload validated as the task class, or why it does not validate."""
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Match:
    """What a job must be to match: its task class, task field values and job options."""

    task_class: type[Task]
    fields: Mapping[str, Any]
    options: Mapping[str, Any]

    @classmethod
    def of(
        cls,
        task_class: type[Task],
        fields: Mapping[str, Any] | None,
        field_values: Mapping[str, Any],
        queue: str | None,
        priority: int | None,
        context: str | None,
    ) -> _Match:
        if not (isinstance(task_class, type) and issubclass(task_class, Task)):
            raise TypeError(f"expected a Task class, not {task_class!r}")
        if not is_concrete(task_class):
            raise TypeError(f"{task_class.__qualname__} does not implement run(): no job runs it")
        given = dict(fields or {})
        for name, value in field_values.items():
            if name in given:
                raise TypeError(f"field {name!r} is given twice")
            given[name] = value
        unknown = sorted(set(given) - set(task_class.model_fields))
        if unknown:
            raise TypeError(
                f"{task_class.__qualname__} has no field {', '.join(map(repr, unknown))} "
                f"(its fields: {', '.join(task_class.model_fields) or 'none'})"
            )
        options = {"queue": queue, "priority": priority, "context": context}
        return cls(
            task_class, given, {name: value for name, value in options.items() if value is not None}
        )

    @property
    def name(self) -> str:
        return self.task_class.__task_options__.name

    def matches(self, job: _EnqueuedJob) -> bool:
        return not self.differences(job)

    def differences(self, job: _EnqueuedJob) -> list[str]:
        """Say how `job` differs from what is asked, e.g. ``to='b@x' (expected 'a@x')``."""
        found: list[str] = []
        for name, expected in self.options.items():
            actual = getattr(job, name)
            if actual != expected:
                found.append(f"{name}={actual!r} (expected {expected!r})")
        for name, expected in self.fields.items():
            if isinstance(job.task, ValidationError):
                found.append("payload does not validate")
                break
            actual = getattr(job.task, name)
            if actual != expected:
                found.append(f"{name}={actual!r} (expected {expected!r})")
        return found

    def describe(self) -> str:
        """Say what is asked, e.g. ``SendEmail ('send_email') with to='a@x', queue='mail'``."""
        criteria = [f"{name}={value!r}" for name, value in {**self.fields, **self.options}.items()]
        where = f" with {', '.join(criteria)}" if criteria else ""
        return f"{self.task_class.__qualname__} ({self.name!r}){where}"


@dataclass(frozen=True, slots=True)
class _Seen:
    """The jobs of the task asked about that a session sees; if none, the other tasks' counts."""

    jobs: list[_EnqueuedJob]
    others: Counter[str]


def _answer(
    session: Session | AsyncSession, match: _Match, use: Callable[[_Seen], R]
) -> R | Coroutine[Any, Any, R]:
    """Look at the jobs `session` sees for `match`, and hand them to `use`."""
    __tracebackhide__ = True
    if isinstance(session, AsyncSession):
        return _answer_async(session, match, use)
    if isinstance(session, Session):
        return use(_look(session, match.task_class))
    raise TypeError(f"expected a Session or an AsyncSession, not {type(session).__name__}")


async def _answer_async(session: AsyncSession, match: _Match, use: Callable[[_Seen], R]) -> R:
    __tracebackhide__ = True
    return use(await session.run_sync(_look, match.task_class))


def _look(session: Session, task_class: type[Task]) -> _Seen:
    """Return every job of `task_class` that `session` sees, each once."""
    name = task_class.__task_options__.name
    # Executing through the session autoflushes it, so pending jobs are written (and then read)
    # inside its transaction; uncommitted and committed rows come back alike.
    rows = session.execute(
        select(Job.id, Job.queue, Job.priority, Job.context, Job.payload)
        .where(Job.name == name)
        .order_by(Job.created_at)
    ).all()
    found = [(row.id, row.queue, row.priority, row.context, row.payload) for row in rows]
    seen = {row.id for row in rows}
    # Read after the query: what is still pending was added with autoflush off.
    for job in session.new:
        if isinstance(job, Job) and job.name == name and job.id not in seen:
            queue = "default" if job.queue is None else job.queue
            priority = 0 if job.priority is None else job.priority
            found.append((job.id, queue, priority, job.context or "", job.payload))
    jobs = [
        _EnqueuedJob(
            id=job_id,
            queue=queue,
            priority=priority,
            context=context,
            task=_decode(task_class, payload),
            payload=payload,
        )
        for job_id, queue, priority, context, payload in found
    ]
    # Only when there is nothing to list: a failure message then says what was enqueued instead.
    return _Seen(jobs, Counter() if jobs else _other_jobs(session, name))


def _decode(task_class: type[Task], payload: Mapping[str, Any]) -> Task | ValidationError:
    try:
        return task_class.model_validate(payload)
    except ValidationError as exc:
        return exc


def _other_jobs(session: Session, name: str) -> Counter[str]:
    """Count the jobs of tasks other than `name` that `session` sees, by task name."""
    rows = session.execute(
        select(Job.name, func.count()).where(Job.name != name).group_by(Job.name)
    ).all()
    counts = Counter({row[0]: row[1] for row in rows})
    for job in session.new:
        if isinstance(job, Job) and job.name != name:
            counts[job.name] += 1
    return counts


def _fail(headline: str, match: _Match, seen: _Seen) -> None:
    __tracebackhide__ = True
    lines = [f"{headline}."]
    if seen.jobs:
        lines.append(f"Enqueued {match.task_class.__qualname__} jobs ({len(seen.jobs)}):")
        for job in seen.jobs[:MAX_LISTED_JOBS]:
            differences = match.differences(job)
            verdict = f"differs: {'; '.join(differences)}" if differences else "matches"
            lines.append(f"  - {_show(job)}")
            lines.append(f"      {verdict}")
        if len(seen.jobs) > MAX_LISTED_JOBS:
            lines.append(f"  … and {len(seen.jobs) - MAX_LISTED_JOBS} more")
    else:
        others = ", ".join(f"{name!r} x{count}" for name, count in sorted(seen.others.items()))
        lines.append(f"No {match.name!r} jobs are enqueued; other jobs: {others or 'none'}.")
    raise AssertionError("\n".join(lines))


def _show(job: _EnqueuedJob) -> str:
    task = (
        f"<payload {dict(job.payload)!r} does not validate>"
        if isinstance(job.task, ValidationError)
        else repr(job.task)
    )
    return f"{task} queue={job.queue!r} priority={job.priority} context={job.context!r}"
