"""What did the code under test enqueue: `assert_enqueued`, `refute_enqueued`, `all_enqueued`.

Each looks through the caller's own session, so it sees jobs added but not flushed, flushed
but not committed, and committed alike, each once.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar, overload

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from sqla_jobs.tasks import Task
from sqla_jobs.testing.matching import Match, Seen, fail, look

T = TypeVar("T", bound=Task)
R = TypeVar("R")


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
    match = Match.of(task_class, fields, field_values, queue, priority, context)

    def check(seen: Seen) -> None:
        __tracebackhide__ = True
        matching = sum(match.matches(job) for job in seen.jobs)
        if matching > 0 if count is None else matching == count:
            return
        wanted = "a job" if count is None else f"{count} job{'' if count == 1 else 's'}"
        fail(f"expected {wanted} of {match.describe()}; found {matching}", match, seen)

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
    match = Match.of(task_class, fields, field_values, queue, priority, context)

    def check(seen: Seen) -> None:
        __tracebackhide__ = True
        matching = sum(match.matches(job) for job in seen.jobs)
        if matching:
            fail(f"expected no job of {match.describe()}; found {matching}", match, seen)

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
    match = Match.of(task_class, fields, field_values, queue, priority, context)

    def collect(seen: Seen) -> list[T]:
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


def _answer(
    session: Session | AsyncSession, match: Match, use: Callable[[Seen], R]
) -> R | Coroutine[Any, Any, R]:
    """Look at the jobs `session` sees for `match`, and hand them to `use`."""
    __tracebackhide__ = True
    if isinstance(session, AsyncSession):
        return _answer_async(session, match, use)
    if isinstance(session, Session):
        return use(look(session, match.task_class))
    raise TypeError(f"expected a Session or an AsyncSession, not {type(session).__name__}")


async def _answer_async(session: AsyncSession, match: Match, use: Callable[[Seen], R]) -> R:
    __tracebackhide__ = True
    return use(await session.run_sync(look, match.task_class))
